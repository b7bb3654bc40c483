"""``edgeface deploy``: copy a bundle and config to Pis over ssh, restart, check /healthz, roll back on failure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from edgeface.cli.common import EXIT_CHECK_FAILED, echo_err, field_default, friendly_errors, refuse_secret_in_argument
from edgeface.deploy.hosts import DeployOptions

if TYPE_CHECKING:
    from edgeface.deploy.remote import HostResult

ORDER = 70


@friendly_errors
def deploy(
    hosts: List[str] = typer.Argument(..., help="Pis to deploy to: [user@]host[:port], several at once."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b",
                                          help="The .edgeface bundle. Default: the one the config names."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="Daemon config (TOML) for the Pi. Default: camera 0, HTTP on "
                                               "127.0.0.1:8321. Its bundle line is set to the copied bundle."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n",
                                 help="Connect and say what would be done; change nothing."),
    user: Optional[str] = typer.Option(None, "--user", "-l", help="ssh login for hosts given without user@."),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="ssh port for hosts given without :port."),
    identity: Optional[Path] = typer.Option(None, "--identity", "-i", help="ssh private key."),
    known_hosts: Optional[Path] = typer.Option(
        None, help="known_hosts file to check host keys against (default: ssh's own). Unknown keys are refused."),
    ssh_option: List[str] = typer.Option([], "--ssh-option", "-o", help="Extra ssh option Key=Value; repeatable."),
    copy: str = typer.Option(field_default(DeployOptions, "copy"), help="How files travel: rsync or scp."),
    prefix: str = typer.Option(field_default(DeployOptions, "prefix"),
                               help="Root on the host that holds opt/edgeface (a test or staging root)."),
    restart_cmd: str = typer.Option(field_default(DeployOptions, "restart_cmd"),
                                    help="Run on the host after switching ($EDGEFACE_ROOT, $EDGEFACE_RELEASE set)."),
    health_url: Optional[str] = typer.Option(
        None, help="URL fetched on the host until it answers 2xx. Default: /healthz at the config's [http] port."),
    health_cmd: Optional[str] = typer.Option(None, help="Instead of a URL: a command on the host that succeeds "
                                                        "when the service is healthy."),
    health_timeout: float = typer.Option(field_default(DeployOptions, "health_timeout"),
                                         help="Seconds to wait for a healthy answer after a restart."),
    http_token: Optional[str] = typer.Option(
        None, help="Install an HTTP bearer token on each host: 'generate' makes a new one and prints it once on "
                   "this terminal; a FILE gives its first line. Stored as the systemd credential http-token "
                   "(/etc/edgeface/credentials, root's), never logged."),
    mqtt_password: Optional[Path] = typer.Option(
        None, help="FILE whose first line is the MQTT password: stored as the systemd credential mqtt-password."),
    credential_cmd: str = typer.Option(
        field_default(DeployOptions, "credential_cmd"),
        help="Run on the host with a credential's name as its argument and the secret on stdin."),
    keep: int = typer.Option(field_default(DeployOptions, "keep"),
                             help="Releases to keep on each host, the current one included."),
    jobs: int = typer.Option(field_default(DeployOptions, "jobs"), help="Hosts to deploy to at once."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step on stderr."),
) -> None:
    """Deploy a bundle to Raspberry Pis prepared by firmware_scripts/install.sh.

    Per host: copy bundle + config into /opt/edgeface/releases/<id> (id = hash of both), switch
    /opt/edgeface/current atomically, restart the service, wait for /healthz. When the restart or the check
    fails, the previous release is made current and restarted again. The same bundle and config twice is a
    no-op ("unchanged"). One result line per host; exit 1 when any host failed, was rolled back or
    unreachable. Host keys are checked: add each Pi to known_hosts first (ssh to it once).

    --http-token and --mqtt-password store secrets as systemd credentials on each host (the unit loads them
    with LoadCredential=); a changed credential restarts the service even when the release is unchanged.
    """
    from edgeface.daemon.access import MIN_TOKEN_CHARS
    from edgeface.daemon.secrets import read_secret_option
    from edgeface.deploy import deploy as run_deploy, generate_token, prepare_release

    refuse_secret_in_argument("--health-url", health_url, "a health_cmd")
    credentials = []
    if http_token is not None:
        token = (generate_token() if http_token == "generate" else
                 read_secret_option("--http-token", http_token, min_chars=MIN_TOKEN_CHARS))
        credentials.append(("http-token", token))
    if mqtt_password is not None:
        credentials.append(("mqtt-password", read_secret_option("--mqtt-password", str(mqtt_password))))
    options = DeployOptions(prefix=prefix, restart_cmd=restart_cmd, health_url=health_url, health_cmd=health_cmd,
                            health_timeout=health_timeout, user=user, port=port, identity=identity,
                            known_hosts=known_hosts, ssh_options=tuple(ssh_option), copy=copy, keep=keep,
                            dry_run=dry_run, jobs=jobs, credentials=tuple(credentials),
                            credential_cmd=credential_cmd)
    options.check()
    release = prepare_release(bundle, config)
    if http_token == "generate" and not dry_run:
        # Shown once, here only: the hosts keep it where only root and the service can read it.
        echo_err(f"HTTP bearer token (shown once; send it as 'Authorization: Bearer TOKEN'): {token}")
    if dry_run:
        echo_err(f"dry run: release {release.id} ({release.bundle}); nothing will be changed")

    def show(result: HostResult) -> None:
        typer.echo(result.line())
        for step in result.steps:
            typer.echo(f"    {step}")

    log = (lambda host, message: echo_err(f"{host}: {message}")) if verbose else None
    results = run_deploy(hosts, release, options, on_result=show, on_log=log)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
