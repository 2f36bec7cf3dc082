"""meshtest.py: what the deployment tests (chart_wiring.py, observe_dashboards.py, chart-test.sh)
share: loopback ports from this project's test range, polling, a small JSON client for the edge's
API, and how many Postgres connections a pod of each role may hold."""

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

WAIT_SECS = 60
PORTS = range(*(lambda a, b: (int(a), int(b) + 1))(*os.environ.get("MESH_TEST_PORTS", "19300-19399").split("-")))
_handed_out = set()


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def with_password(url):
    """`url` with its password from the password file in PGPASSFILE (scripts/services.sh's
    Postgres keeps its password there), as an operator's Secret holds a database URL; `url`
    itself when it has a password already or the file has none for its host, port and user."""
    parts = urllib.parse.urlsplit(url)
    path = os.environ.get("PGPASSFILE")
    if parts.password is not None or not path or not os.path.exists(path):
        return url
    database = parts.path.lstrip("/")
    with open(path) as f:
        for line in f:
            fields = (line.rstrip("\n").split(":", 4) + [""] * 5)[:5]
            wanted = (parts.hostname, str(parts.port or 5432), database, parts.username)
            password = fields[4]
            if password and all(f in ("*", w) for f, w in zip(fields[:4], wanted)):
                netloc = f"{parts.username}:{urllib.parse.quote(password, safe='')}@{parts.hostname}"
                if parts.port:
                    netloc += f":{parts.port}"
                return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


@contextlib.contextmanager
def scratch_dir(prefix):
    """A temporary directory for a check's keys, logs and data: removed when the check passes,
    kept (and named on stderr) when it fails, for its logs."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    except BaseException:
        print(f"logs and data of the failed check kept in {path}", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


def free_port():
    """A loopback port of the test range (MESH_TEST_PORTS) that nothing listens on."""
    for port in PORTS:
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    fail(f"no free port in {PORTS}")


def status_of(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_for(what, check, alive=lambda: None):
    """Polls `check` until true; `alive` raises or fails when a process it watches died."""
    deadline = time.monotonic() + WAIT_SECS
    while not check():
        alive()
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.1)


class Api:
    """JSON over HTTP against one edge."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.base + path, method=method)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(req, data=data, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def ok(self, method, path, body=None, token=None, want=(200, 201, 202, 204)):
        status, answer = self.call(method, path, body, token)
        if status not in want:
            fail(f"{method} {path} answered {status}: {answer}")
        return answer

    def user(self, name):
        """Registers and logs in a new user; answers (login answer, user id)."""
        phone = f"+1555{str(uuid.uuid4().int)[:8]}"
        self.ok("POST", "/v1/auth/register",
                {"phone": phone, "password": "correct horse", "nickname": name})
        login = self.ok("POST", "/v1/auth/login", {"phone": phone, "password": "correct horse"})
        login["phone"] = phone
        return login, self.ok("GET", "/v1/users/me", token=login["access_token"])["id"]

    def befriend(self, token_a, id_b, token_b):
        req = self.ok("POST", "/v1/friend-requests", {"user_id": id_b, "message": "hi"}, token=token_a)
        self.ok("POST", f"/v1/friend-requests/{req['request']['id']}/accept", token=token_b)

    def stored_bodies(self, token):
        """Bodies of the messages in the caller's first conversation."""
        convs = self.ok("GET", "/v1/conversations", token=token)["items"]
        if not convs:
            return []
        history = self.ok("GET", f"/v1/conversations/{convs[0]['id']}/messages?after_seq=0", token=token)
        return [m.get("body") for m in history["items"]]

    def send_until_stored(self, token_from, id_to, token_to, client_id, body, alive=lambda: None):
        """Sends (again, same client id, until friendship has reached chat) until stored."""
        def stored():
            status, _ = self.call("POST", "/v1/messages",
                                  {"client_id": client_id, "to": id_to, "body": body}, token=token_from)
            return status == 202 and body in self.stored_bodies(token_to)
        wait_for(f"message {client_id} to be stored", stored, alive)


def delete_prefix(prefix):
    """Deletes the streams and buckets of this run's prefix."""
    import asyncio
    import nats

    async def run():
        login = {}
        creds = os.environ.get("MESH_NATS_ROLE_CREDENTIALS")
        if creds:  # `<role> <password>` lines; the migrate role owns streams and buckets
            with open(creds) as f:
                for line in f:
                    role, _, password = line.strip().partition(" ")
                    if role == "migrate":  # replies only reach its own inbox prefix
                        login = {"user": role, "password": password,
                                 "inbox_prefix": f"_INBOX.{prefix}.migrate".encode()}
        nc = await nats.connect(os.environ["MESH_NATS_URL"], **login)
        js = nc.jetstream()
        for info in await js.streams_info():
            if prefix in info.config.name.lower():
                await js.delete_stream(info.config.name)
        await nc.close()

    try:
        asyncio.run(run())
    except Exception as err:  # cleanup only; the test's verdict is already made
        print(f"could not clean up NATS streams: {err}", file=sys.stderr)


# Service pools of MESH_DB_MAX_CONNECTIONS each that a process of each role opens (src/roles.rs).
POOLS = {"edge": 0, "user": 1, "social": 1, "chat": 1, "outbox": 1, "all": 4}


@functools.cache
def relay_connections():
    """Postgres connections the outbox relay holds beside the service pools: per relayed schema
    (three) its advisory lock's and LISTEN connection and a pool of RELAY_POOL_CONNECTIONS, read
    from src/roles.rs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "src", "roles.rs")) as f:
        m = re.search(r"const RELAY_POOL_CONNECTIONS: u32 = (\d+);", f.read())
    if not m:
        fail("cannot read RELAY_POOL_CONNECTIONS from src/roles.rs")
    return 3 * (2 + int(m.group(1)))


def pod_connections(component, pool_size):
    """The most Postgres connections one process of `component` holds with pools of `pool_size`."""
    relay = relay_connections() if component in ("outbox", "all") else 0
    return POOLS[component] * int(pool_size) + relay
