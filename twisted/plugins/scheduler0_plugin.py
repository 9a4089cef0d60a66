from twisted.application.service import ServiceMaker

scheduler0 = ServiceMaker(
    "scheduler0", "scheduler0.service", "A Scheduler0 cron node.", "scheduler0"
)
