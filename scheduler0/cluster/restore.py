"""
A cluster node restored from a backup (L{scheduler0.store.backup}): its Raft
log starts with the restored state as a snapshot at index 1, so the state is
part of the log like any other. Every node of the new cluster restored from
the same file starts from the same snapshot; a node that joins later, or
starts with an empty data directory, is sent it by the leader, as a follower
behind a compacted log is, instead of entries from index 1 that would leave
it without the restored state.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

from scheduler0.raft.messages import ClusterConfig, SnapshotMeta
from scheduler0.raft.storage import SnapshotFile, SqliteRaftStorage
from scheduler0.store.backup import STATE_FILE, restore_backup

#: The log position of a restored state: the first entry, of the first term.
RESTORED_INDEX = 1
RESTORED_TERM = 1
RAFT_FILE = "raft.db"


def restore_cluster_node(
    path: str,
    data_dir: str,
    secret_key: str,
    previous_keys: Sequence[str],
    voters: Iterable[int],
) -> dict[str, Any]:
    """
    Restore the backup at C{path} into the empty C{data_dir} of a node of a
    new cluster whose initial voters are C{voters} (its Replicas): the state
    machine at index L{RESTORED_INDEX} and a Raft log holding it as its
    snapshot there. Returns the backup's header; on any failure the data
    directory is left as empty as it was.
    """
    header = restore_backup(path, data_dir, secret_key, previous_keys, RESTORED_INDEX)
    try:
        start_log_at_restored_state(data_dir, voters)
    except BaseException:
        for name in os.listdir(data_dir):
            target = os.path.join(data_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        raise
    return header


def start_log_at_restored_state(data_dir: str, voters: Iterable[int]) -> None:
    """Record C{data_dir}'s restored state machine as its Raft log's first snapshot."""
    storage = SqliteRaftStorage(os.path.join(data_dir, RAFT_FILE))
    try:
        copy = storage.capture_path()
        shutil.copyfile(os.path.join(data_dir, STATE_FILE), copy)
        config = ClusterConfig(frozenset(str(node_id) for node_id in voters))
        storage.save_snapshot(
            SnapshotMeta(RESTORED_INDEX, RESTORED_TERM, config), SnapshotFile.at(copy)
        )
    finally:
        storage.close()
