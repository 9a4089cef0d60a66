"""
The signature-verification recipes printed in README.md (Python and
Node.js) are run as printed against signatures the node's signer makes:
they accept a good callback and refuse tampered, foreign and stale ones.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from harness.process import REPO_ROOT, client_headers, http_client, prepare_single_node
from scheduler0.signing import signature_header

BODY = b'[{"execution_id":"e1","data":{"x":"\\u00e9"}}]'


def recipe(language: str) -> str:
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf"<!-- recipe: {re.escape(language)} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README.md has no {language} recipe"
    return match.group(1)


def curl_project_bodies() -> list[dict]:
    """The projects the README's curl examples create, in order (their JSON bodies)."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    found = re.findall(
        r"curl -s \$H -d '(\{[^']*\})' http://127\.0\.0\.1:9091/api/v1/projects", text
    )
    assert found, "README.md has no curl example creating a project"
    return [json.loads(body) for body in found]


def cases() -> list[tuple[str, bytes, str, bool]]:
    """(header, body, secret, expected) for the recipes to judge."""
    now = int(time.time())
    good = signature_header(["topsecret"], now, BODY)
    two = signature_header(["other", "topsecret"], now, BODY)
    stale = signature_header(["topsecret"], now - 3600, BODY)
    return [
        (good, BODY, "topsecret", True),
        (two, BODY, "topsecret", True),
        (good, BODY + b" ", "topsecret", False),
        (good, BODY, "wrong", False),
        (stale, BODY, "topsecret", False),
        (good.replace(f"t={now}", f"t={now + 1}"), BODY, "topsecret", False),
        ("v1=00", BODY, "topsecret", False),
    ]


class RecipeTests(SynchronousTestCase):
    def test_python_recipe(self) -> None:
        """The README's Python recipe accepts good signatures and refuses bad ones."""
        namespace: dict = {}
        exec(compile(recipe("python"), "README.md (python recipe)", "exec"), namespace)
        verify = namespace["verify_scheduler0"]
        for header, body, secret, expected in cases():
            self.assertEqual(verify(header, body, secret), expected, (header, body, secret))

    def test_node_recipe(self) -> None:
        """The README's Node.js recipe gives the same verdicts, run by node itself."""
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node is needed to run the README's Node.js recipe")
        judged = [
            {"header": h, "body": b.decode("utf-8"), "secret": s, "expected": e}
            for h, b, s, e in cases()
        ]
        script = (
            recipe("node")
            + "\nconst cases = JSON.parse(process.argv[1]);\n"
            + "console.log(JSON.stringify(cases.map((c) =>"
            + " verifyScheduler0(c.header, Buffer.from(c.body, 'utf8'), c.secret))));\n"
        )
        done = subprocess.run(
            [node, "-e", script, json.dumps(judged)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout), [c["expected"] for c in judged])


class ClientRecipeTests(TestCase):
    """The README's Python client example, run as printed against a real node."""

    timeout = 120

    async def test_python_client_recipe_runs_as_printed(self) -> None:
        """
        Run after the API section's curl example has created its project on
        the same node (a reader follows the README in order), it creates a
        project, a job and 500 more jobs, previews three instants, pauses the
        job, and prints the API's 400 naming spec.
        """
        node = await prepare_single_node(reactor, os.path.abspath(self.mktemp()))
        self.addCleanup(node.kill)
        await node.start()
        headers = await client_headers(node)
        http = http_client(reactor)
        for body in curl_project_bodies():
            response = await http.post(node.url + "/api/v1/projects", json=body, headers=headers)
            self.assertEqual(response.code, 201, await response.text())
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.update(
            API_ENDPOINT=node.url,
            API_KEY=headers["x-api-key"],
            API_SECRET=headers["x-secret-key"],
        )
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", recipe("python-client")], env=env
        )
        self.assertEqual(code, 0, err.decode())
        lines = out.decode().splitlines()
        self.assertEqual(len(ast.literal_eval(lines[0])), 3)  # the next three instants
        self.assertTrue(lines[-1].startswith("400 {'spec': "), lines[-1])
        response = await http.get(node.url + "/api/v1/jobs?limit=1", headers=headers)
        self.assertEqual((await response.json())["data"]["total"], 501)
        response = await http.get(node.url + "/api/v1/jobs?paused=true", headers=headers)
        paused = (await response.json())["data"]["items"]
        self.assertEqual([job["name"] for job in paused], ["invoice run"])
