"""Deploy a bundle and its daemon config to Raspberry Pis over ssh, with a health check and rollback.

On each host (prepared by ``firmware_scripts/install.sh``) the layout under ``<prefix>/opt/edgeface`` is::

    releases/<id>/model.edgeface   the bundle
    releases/<id>/edgeface.toml    the daemon config (``bundle = "model.edgeface"``), 0640, group edgeface
    releases/<id>/SHA256SUMS       checked after the copy and before declaring a deploy a no-op
    releases/current -> <id>       what the service runs; switched atomically (symlink + rename)
    current -> releases/current    root's fixed link, the path the unit reads; /opt/edgeface and its venv
                                   are root's, releases/ is the only folder the deploy user may write

A release id is derived from the content (bundle + config), so deploying the same thing twice is detected
and changes nothing. The steps per host: read the current release; copy into ``releases/.incoming-<id>``
(rsync or scp); verify checksums; move into place; switch ``current``; restart the service; poll the health
check until it passes or times out. When the restart or the check fails, ``current`` goes back to the
previous release, which is restarted (and checked) again, and the failed release is removed.

Hosts are deployed in parallel, each one reported on one line. Everything runs through the system's
``ssh`` with ``StrictHostKeyChecking=yes``: a host whose key is not in known_hosts is refused, never added.

The package: ``hosts`` (destinations and options), ``release`` (what is deployed), ``remote`` (the transaction
on each host, through ``remote_deploy.sh``, the shell that runs there).
"""

from edgeface.deploy.hosts import DeployOptions, Host, generate_token, parse_host
from edgeface.deploy.release import BUNDLE_NAME, CONFIG_NAME, Release, prepare_release
from edgeface.deploy.remote import HostResult, deploy, deploy_host, remote_script

__all__ = ["BUNDLE_NAME", "CONFIG_NAME", "DeployOptions", "Host", "HostResult", "Release", "deploy", "deploy_host",
           "generate_token", "parse_host", "prepare_release", "remote_script"]
