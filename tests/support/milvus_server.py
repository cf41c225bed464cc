"""A real Milvus server for the tests: one per test session, shared by the xdist workers, or a skip that says why.

`milvus_server` (a session fixture, exposed by tests/conftest.py) yields the server's URL for
`milvus:http://127.0.0.1:PORT#collection` specs. It uses, in order:
- `$VITRINE_MILVUS_SERVER_URL`, a server someone else runs (never started or stopped here);
- else a Milvus standalone started from the `milvus` wheel (PyPI, Linux: the binary with embedded etcd and local
  storage, no other service), in a temporary directory, on free loopback ports, in its own process group; the
  xdist worker that started it kills it once the others are done with it, and it dies with that worker.
It skips with the reason when neither gives a server that vitrine's collections work on, and fails instead when
`$VITRINE_REQUIRE_MILVUS_SERVER` is set.

`python -m tests.support.milvus_server` starts the wheel's server, prints its start time, memory and version, tries one
vitrine collection on it and stops it: the check to rerun when a new `milvus` wheel appears.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.http import free_port

REQUIRE = "VITRINE_REQUIRE_MILVUS_SERVER"
EXTERNAL = "VITRINE_MILVUS_SERVER_URL"
# The oldest server vitrine's collections work on: before 2.5 (no nullable fields) they store "" for a missing value,
# and
# before 2.4 (no INVERTED index on VARCHAR) they index declared attributes with Trie (vitrine.index.milvus_store).
# 2.2 is untested; 2.3.5 is the `milvus` wheel's newest build, the server the dev extra installs.
MIN_VERSION = (2, 3)
START_TIMEOUT_S = 180.0
STOP_WAIT_S = 10.0


class ServerUnavailable(RuntimeError):
    """No usable Milvus server; the message is the skip reason."""


@dataclass(frozen=True)
class Server:
    url: str
    pgid: int
    base_dir: str
    metrics_port: int = 0  # its /healthz (needed to start it again: relaunch)


def _version(text: str) -> tuple[int, ...]:
    digits = text.lstrip("v").split("-")[0].split(".")
    return tuple(int(d) for d in digits if d.isdigit())


def _too_old(version: str, where: str) -> str | None:
    if _version(version) >= MIN_VERSION:
        return None
    return (
        f"{where} is Milvus {version}; vitrine's collections are tested on Milvus >= "
        f"{'.'.join(map(str, MIN_VERSION))}. "
        f"Set {EXTERNAL}=http://HOST:19530 to test against a newer server"
    )


def _log_tail(base_dir: str, lines: int = 6) -> str:
    """The server's error lines (its structured log is stdout) and the end of its stderr (the dynamic loader, Go
    panics)."""
    found = []
    for name in ("milvus-stdout.log", "milvus-stderr.log"):
        with contextlib.suppress(OSError):
            text = Path(base_dir, "logs", name).read_text(errors="replace").splitlines()
            errors = [line[:400] for line in text if "[ERROR]" in line or line.startswith(("panic:", "fatal", "error"))]
            found += (
                errors[-lines:] if errors or name.endswith("stdout.log") else [line[:400] for line in text[-lines:]]
            )
    return " | ".join(found) or "(the server wrote no log)"


def server_version(url: str) -> str:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=url, timeout=10)
    try:
        return client.get_server_version()
    finally:
        client.close()


def _die_with_parent() -> None:
    """In the child: SIGKILL me when the process that started me dies (a crashed test process leaks no server)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


TEST_TUNING = {
    # A flush waits for the segment's row assignments to expire: 2 s by default, so every acknowledged write took
    # ~2.5 s. Milvus asks never to lower it over existing data; each test server is fresh and keeps this value.
    "    assignmentExpiration: 2000": "    assignmentExpiration: 200",
    # A killed server's sessions live this long before a restarted one takes over and reloads its collections.
    "    ttl: 30 #": "    ttl: 8 #",
    # A Strong read waits for the next time tick past its timestamp: ticks every 20 ms rather than 200.
    "  timeTickInterval: 200 #": "  timeTickInterval: 20 #",
    # A quiet channel (60 s without writes) would skip most ticks, so a test's next write or read waited the longer.
    "      enable: true\n      skipNum: 4": "      enable: false\n      skipNum: 4",
}


def tune_for_tests(config: Path) -> None:
    """Shorten the waits that dominate a test server's writes and restarts (each key must be there to be replaced)."""
    text = config.read_text()
    for default, tuned in TEST_TUNING.items():
        if text.count(default) != 1:
            raise ServerUnavailable(f"{config} does not hold {default.strip()!r} once: another wheel's layout")
        text = text.replace(default, tuned)
    config.write_text(text)


def start(base_dir: str, timeout: float = START_TIMEOUT_S) -> Server:
    """Start the `milvus` wheel's standalone server under `base_dir`; return once it answers gRPC."""
    try:
        import milvus
    except ImportError as error:
        raise ServerUnavailable(f"the `milvus` package is missing (pip install milvus): {error}") from None
    # The wheel's own MilvusServer.start() waits on a process that may have died (a crash looks like a 180 s timeout)
    # and does not use a process group; only its config writer and binary unpacker are used here.
    ports = {key: free_port() for key in milvus.MilvusServerConfig().configurable_items if key.endswith("_port")}
    try:
        config = milvus.MilvusServerConfig(data_dir=base_dir, **ports)
        config.resolve()  # writes configs/milvus.yaml
        tune_for_tests(Path(base_dir, "configs", "milvus.yaml"))
        milvus._initialize_data_files(base_dir)  # unpacks bin/milvus and its libraries (~250 MB)
    except (
        OSError,
        RuntimeError,
        AttributeError,
    ) as error:  # a port taken meanwhile, a full disk, another wheel layout
        raise ServerUnavailable(
            f"cannot prepare the `milvus` wheel's server in {base_dir}: {type(error).__name__}: {error}"
        ) from None
    # The embedded etcd listens on its own defaults (2379, peer 2380) unless given a config: a second server on the
    # machine (another test process, a developer's Milvus) would then crash at start with "bind: address already in
    # use".
    peer = free_port()
    etcd_config = Path(base_dir, "configs", "embedEtcd.yaml")
    etcd_config.write_text(
        f"name: default\nlisten-client-urls: http://127.0.0.1:{ports['etcd_port']}\n"
        f"advertise-client-urls: http://127.0.0.1:{ports['etcd_port']}\nlisten-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\ninitial-cluster: default=http://127.0.0.1:{peer}\n"
    )
    return _launch(base_dir, ports["proxy_port"], free_port(), timeout)


def _launch(base_dir: str, proxy_port: int, metrics: int, timeout: float) -> Server:
    """Run the prepared server in `base_dir` (its configs name every port but these two) and wait until it answers."""
    binary = Path(base_dir, "bin", "milvus")
    etcd_config = Path(base_dir, "configs", "embedEtcd.yaml")
    env = {
        **os.environ,
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(metrics),
        "ETCD_CONFIG_PATH": str(etcd_config),
        "MILVUS_RUN_DIR": str(Path(base_dir, "run")),
        "LD_LIBRARY_PATH": ":".join(filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")])),
    }
    logs = Path(base_dir, "logs")
    with open(logs / "milvus-stdout.log", "ab") as out, open(logs / "milvus-stderr.log", "ab") as err:
        try:
            process = subprocess.Popen(
                [str(binary), "run", "standalone"], cwd=base_dir, env=env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        except OSError as error:  # not executable here (another architecture, a noexec temporary directory)
            raise ServerUnavailable(f"cannot run {binary}: {error}") from None
    server = Server(f"http://127.0.0.1:{proxy_port}", process.pid, base_dir, metrics)
    try:
        _wait_ready(process, server, metrics, timeout)
    except BaseException:
        stop(server)
        process.wait(timeout=STOP_WAIT_S)
        raise
    return server


def relaunch(server: Server, timeout: float = START_TIMEOUT_S) -> Server:
    """Start a stopped (or SIGKILLed) `server` again on its ports, over its data; kills it first if it still runs."""
    stop(server)
    return _launch(server.base_dir, int(server.url.rsplit(":", 1)[1]), server.metrics_port, timeout)


def _wait_ready(process: subprocess.Popen, server: Server, metrics: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    healthy = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"the Milvus server exited with code {process.returncode} while starting: "
                f"{_log_tail(server.base_dir)} (logs: {server.base_dir}/logs)"
            )
        try:
            if not healthy:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=2) as response:
                    healthy = b"OK" in response.read()
            if healthy:
                server_version(server.url)
                return
        except Exception:  # not listening yet, or still starting its components
            pass
        time.sleep(0.2)
    raise ServerUnavailable(
        f"the Milvus server did not answer within {timeout:.0f} s: {_log_tail(server.base_dir)} "
        f"(logs: {server.base_dir}/logs)"
    )


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by the process that started it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(server: Server) -> None:
    """SIGKILL the server's process group and wait until it is gone.

    Not SIGTERM: once it has served requests, Milvus 2.3.5's graceful stop hangs (over 60 s measured: its data node
    keeps retrying the data coordinator it stopped first), and its data lives in a temporary directory anyway.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pgid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(server.pgid, os.WNOHANG)  # reap it when this process started it
            if not _alive(server.pgid):
                return
            time.sleep(0.05)


@contextlib.contextmanager
def shared_server(state_dir: Path) -> Iterator[str]:
    """The URL of the one server that the test processes sharing `state_dir` use.

    The process that started it stops it, after waiting for the others to finish with it (or to have died); if that
    process dies first, the server dies with it (PR_SET_PDEATHSIG), so no server outlives the test run.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file, lock_file = state_dir / "milvus-server.json", state_dir / "milvus-server.lock"

    @contextlib.contextmanager
    def locked() -> Iterator[dict]:
        with open(lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
            yield state
            state_file.write_text(json.dumps(state))

    me = os.getpid()
    with locked() as state:
        if state.get("error"):
            raise ServerUnavailable(state["error"])
        if not state.get("url") or not _alive(state["pgid"]):
            base_dir = tempfile.mkdtemp(prefix="vitrine-milvus-server-")
            try:
                server = start(base_dir)
            except ServerUnavailable as error:
                shutil.rmtree(Path(base_dir, "bin"), ignore_errors=True)  # keeps the logs the reason points to
                state["error"] = str(error)  # the other test processes skip with the same reason, without retrying
                raise
            state.update(url=server.url, pgid=server.pgid, base_dir=base_dir, owner=me, users=[])
        state["users"].append(me)
        url, owner = state["url"], state["owner"]
    try:
        yield url
    finally:
        while True:
            with locked() as state:
                state["users"] = [pid for pid in state.get("users", []) if pid != me and _alive(pid)]
                if owner != me:
                    break
                if not state["users"]:
                    stop(Server(state["url"], state["pgid"], state["base_dir"]))
                    shutil.rmtree(state["base_dir"], ignore_errors=True)
                    state.clear()
                    break
            time.sleep(0.5)


def _unavailable(reason: str):
    if os.environ.get(REQUIRE):
        pytest.fail(f"{REQUIRE} is set, but no Milvus server: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """The URL of a Milvus server (>= MIN_VERSION) for this test session; see the module docstring."""
    pytest.importorskip("pymilvus", reason="pymilvus is missing: pip install -e '.[scale]'")
    if os.environ.get(EXTERNAL):
        url = os.environ[EXTERNAL]
        try:
            version = server_version(url)
        except Exception as error:
            _unavailable(f"{EXTERNAL}={url} does not answer: {error}")
        if reason := _too_old(version, f"{EXTERNAL}={url}"):
            _unavailable(reason)
        yield url
        return
    try:
        import milvus
    except ImportError:
        _unavailable(
            "the `milvus` package (an embedded Milvus standalone server) is missing: pip install milvus, "
            f"or set {EXTERNAL}=http://HOST:19530"
        )
    # Checked before starting: the wheel's version is its server's, and starting one takes ~10 s and ~390 MB of disk.
    if reason := _too_old(milvus.__version__, "the `milvus` wheel's server"):
        _unavailable(reason)
    # xdist workers of one run share the parent of their base temp directories, so they share one server.
    root = tmp_path_factory.getbasetemp()
    try:
        with shared_server(root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) as url:
            yield url
    except ServerUnavailable as error:
        _unavailable(str(error))


class OwnServer:
    """A Milvus server of one test's own, which it may SIGKILL and start again (same ports, same data)."""

    def __init__(self, server: Server):
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        stop(self.server)

    def relaunch(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start it again; returns once it answers gRPC (its collections may still be loading)."""
        self.server = relaunch(self.server, timeout)


@contextlib.contextmanager
def own_server(base_dir: str) -> Iterator[OwnServer]:
    """A server from the `milvus` wheel for the caller alone (never `$VITRINE_MILVUS_SERVER_URL`'s: it is killed), or a
    skip (a failure under `$VITRINE_REQUIRE_MILVUS_SERVER`) that says why; stopped and removed afterwards."""
    pytest.importorskip("pymilvus", reason="pymilvus is missing: pip install -e '.[scale]'")
    try:
        import milvus
    except ImportError:
        _unavailable("the `milvus` package (an embedded Milvus standalone server) is missing: pip install milvus")
    if reason := _too_old(milvus.__version__, "the `milvus` wheel's server"):
        _unavailable(reason)
    try:
        own = OwnServer(start(base_dir))
    except ServerUnavailable as error:
        _unavailable(str(error))
    try:
        yield own
    finally:
        own.kill()
        shutil.rmtree(base_dir, ignore_errors=True)


def drop_collections(url: str, prefix: str) -> None:
    """Drop the collections whose names start with `prefix` (a test's own, on the shared server)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=url, token=os.environ.get("VITRINE_MILVUS_TOKEN", ""))
    try:
        for name in client.list_collections():
            if name.startswith(prefix):
                client.drop_collection(name)
    finally:
        client.close()


def _rss_mib(pgid: int) -> float:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                for line in (stat.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total / 1024


def main() -> int:
    """Start the wheel's server (whatever its version), report on it, try a vitrine collection, stop it."""
    import numpy as np

    from vitrine.index.stores import open_store

    base_dir = tempfile.mkdtemp(prefix="vitrine-milvus-server-")
    try:
        began = time.monotonic()
        server = start(base_dir)
        started = time.monotonic() - began
        print(
            f"started {server.url} in {started:.1f} s; Milvus {server_version(server.url)}; "
            f"RSS {_rss_mib(server.pgid):.0f} MiB; base dir {base_dir}",
            flush=True,
        )
        try:
            for attributes in (["gender"], []):
                spec = f"milvus:{server.url}#probe_{len(attributes)}"
                try:
                    store = open_store(spec, model="vitrine:test", dim=8, create=True, attributes=attributes)
                    store.upsert(
                        ["a", "b"], np.eye(2, 8, dtype=np.float32),
                        [{"gender": "Men", "title": None}, {"gender": "Women"}],
                    )
                    print(
                        f"attributes={attributes}: works, "
                        f"{store.search(np.eye(1, 8, dtype=np.float32), k=2, filters={'gender': 'Men'})}"
                    )
                    store.close()
                except Exception as error:  # the finding to print
                    print(f"attributes={attributes}: {type(error).__name__}: {error}")
            print(f"RSS after use {_rss_mib(server.pgid):.0f} MiB", flush=True)
        finally:
            began = time.monotonic()
            stop(server)
            print(f"stopped in {time.monotonic() - began:.1f} s; process group alive: {_alive(server.pgid)}")
    except ServerUnavailable as error:
        print(f"unavailable: {error}")
        return 1
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
