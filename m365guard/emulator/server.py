"""Run the emulator: uvicorn over HTTPS with the local CA, in a thread or in the foreground.

`start_in_thread()` is what tests, the demo and benchmarks use; `serve()` is the CLI's blocking
form (Ctrl-C stops it). Both write the CA, certificates and app registration into `workdir`
(owner-only files) and describe the connection as `EmulatorSettings`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson
import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette

from m365guard.emulator.faults import FaultConfig, FaultEngine
from m365guard.emulator.identity import LEAST_PRIVILEGE_ROLES, AppRegistration, Identity
from m365guard.emulator.routes import DropLogFilter, EmulatorStats, build_app
from m365guard.emulator.service import GraphService
from m365guard.emulator.state import Tenant
from m365guard.emulator.tls import TlsFiles, ensure_tls_files, write_private
from m365guard.errors import ExitCode, GuardError

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0


class EmulatorSettings(BaseModel):
    """What a client needs to connect (the keys of `emulator serve --settings-out`)."""

    tenant_id: str
    client_id: str
    client_secret: str
    certificate_path: str  # PEM: certificate then private key
    certificate_thumbprint: str
    authority_host: str
    graph_endpoint: str
    ca_bundle: str


@dataclass
class Prepared:
    """Everything built before the socket opens."""

    app: Starlette
    tls: TlsFiles
    identity: Identity
    service: GraphService
    stats: EmulatorStats


def load_app_registration(workdir: Path, tls: TlsFiles, roles: Collection[str]) -> AppRegistration:
    """The app's id and secret, kept in workdir/app.json (0600) so restarts keep them."""
    path = workdir / "app.json"
    if path.exists():
        saved = orjson.loads(path.read_bytes())
        client_id, client_secret = saved["client_id"], saved["client_secret"]
    else:
        client_id, client_secret = str(uuid.uuid4()), secrets.token_urlsafe(30)
        write_private(path, orjson.dumps({"client_id": client_id, "client_secret": client_secret}))
    cert_pem = tls.client_pem.read_bytes().split(b"-----END CERTIFICATE-----")[0]
    return AppRegistration(client_id, client_secret,
                           cert_pem + b"-----END CERTIFICATE-----\n", tuple(roles))


def prepare(tenant: Tenant, workdir: Path, faults: FaultConfig | None,
            roles: Collection[str] | None) -> Prepared:
    tls = ensure_tls_files(workdir)
    app_registration = load_app_registration(
        workdir, tls, LEAST_PRIVILEGE_ROLES if roles is None else roles)
    identity = Identity(tenant.id, tenant.domains, app_registration)
    service = GraphService(tenant, FaultEngine(faults))
    stats = EmulatorStats()
    logging.getLogger("uvicorn.error").addFilter(DropLogFilter())
    return Prepared(build_app(service, identity, stats), tls, identity, service, stats)


def settings_for(prepared: Prepared, port: int) -> EmulatorSettings:
    base = f"https://{HOST}:{port}"
    app = prepared.identity.app
    return EmulatorSettings(
        tenant_id=prepared.identity.tenant_id,
        client_id=app.client_id,
        client_secret=app.client_secret,
        certificate_path=str(prepared.tls.client_pem),
        certificate_thumbprint=prepared.tls.client_thumbprint,
        authority_host=base,
        graph_endpoint=base,
        ca_bundle=str(prepared.tls.ca_bundle),
    )


def uvicorn_config(prepared: Prepared, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        prepared.app, host=HOST, port=port, ssl_certfile=str(prepared.tls.server_cert),
        ssl_keyfile=str(prepared.tls.server_key), log_level="warning", access_log=False,
        lifespan="off", timeout_graceful_shutdown=1, timeout_keep_alive=30,
        http="httptools",  # C parser: a night is ~200 MB of responses
    )


class RunningEmulator:
    """An emulator serving in a background thread; a context manager that stops it."""

    def __init__(self, prepared: Prepared, server: uvicorn.Server, thread: threading.Thread,
                 port: int) -> None:
        self._prepared = prepared
        self._server = server
        self._thread = thread
        self.port = port
        self.settings = settings_for(prepared, port)

    @property
    def tenant(self) -> Tenant:
        return self._prepared.service.tenant

    @property
    def stats(self) -> EmulatorStats:
        return self._prepared.stats

    @property
    def identity(self) -> Identity:
        return self._prepared.identity

    def register_app(self, roles: Collection[str]) -> EmulatorSettings:
        """Another app registration with its own id, secret and roles (the same client
        certificate), e.g. the enforcement app; the settings a client of it uses."""
        app = AppRegistration(str(uuid.uuid4()), secrets.token_urlsafe(30),
                              self.identity.app.certificate_pem, tuple(roles))
        self.identity.register(app)
        return self.settings.model_copy(update={"client_id": app.client_id,
                                                "client_secret": app.client_secret})

    def set_faults(self, faults: FaultConfig) -> None:
        """Change faults and throttling while serving (counters start afresh)."""
        self._prepared.service.faults.configure(faults)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        """Stop at once: open keep-alive connections and slow (injected) answers are cut."""
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_in_thread(tenant: Tenant, *, workdir: Path, faults: FaultConfig | None = None,
                    roles: Collection[str] | None = None, port: int = 0) -> RunningEmulator:
    """Serve `tenant` over HTTPS on 127.0.0.1 (port 0: any free port) until stopped."""
    prepared = prepare(tenant, workdir, faults, roles)
    server = uvicorn.Server(uvicorn_config(prepared, port))
    thread = threading.Thread(target=server.run, name="m365guard-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise GuardError(f"the emulator could not listen on {HOST}:{port} "
                             "(is the port in use?)", ExitCode.HOST_UNREACHABLE)
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningEmulator(prepared, server, thread, int(bound))


def serve(tenant: Tenant, *, workdir: Path, faults: FaultConfig | None = None,
          roles: Collection[str] | None = None, port: int = 0,
          on_ready: Callable[[EmulatorSettings], None] | None = None) -> None:
    """Serve in the foreground until Ctrl-C; on_ready gets the settings once listening."""
    with start_in_thread(tenant, workdir=workdir, faults=faults, roles=roles, port=port) as emu:
        if on_ready is not None:
            on_ready(emu.settings)
        try:
            emu.wait()
        except KeyboardInterrupt:
            return
