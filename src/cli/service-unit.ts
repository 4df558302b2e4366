/**
 * The systemd unit sandgate ships (`sandgate install-service`; docs/operations.md). Pure: the
 * text for given paths, so the test can verify exactly what gets installed.
 *
 * Readiness: `Type=exec` plus `ExecStartPost=sandgate wait-ready`, which returns once the control
 * socket answers, and the daemon binds it only after the firewall and every listener are up
 * (src/daemon.ts). So `systemctl start` returns when sandboxes are served, and a start-up
 * failure fails the start. (Node has no sd_notify; a `systemd-notify` child races its own exit.)
 *
 * Privileges: root's uid for its files (/var/lib/sandgate, the control socket), but only the
 * capabilities the data path and the firewall tools use:
 *   CAP_NET_ADMIN  nft and ip rule/route, IP_TRANSPARENT on the TPROXY listener, NFQUEUE, conntrack;
 *   CAP_NET_RAW    iptables-legacy opens a raw socket (checked: without it, "Permission denied");
 *                  iptables-nft, Debian's default, needs CAP_NET_ADMIN only. Kept so either flavour works.
 * No CAP_DAC_OVERRIDE: files sandgate reads must be readable by root's uid without it (secrets
 * come through LoadCredential= or an EnvironmentFile, which systemd reads for it).
 */

export interface UnitPaths {
  /** Absolute path of node. */
  node: string;
  /** Absolute path of sandgate's dist/cli.js. */
  cli: string;
  /** The config file the service runs. */
  config: string;
}

export const DEFAULT_UNIT_PATHS: UnitPaths = {
  node: '/usr/bin/node',
  cli: '/usr/local/lib/node_modules/sandgate/dist/cli.js',
  config: '/etc/sandgate/sandgate.yaml',
};

/** systemd's quoting for one argument of an Exec line (systemd.service(5) "Command lines"). */
function arg(s: string): string {
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(s)) return s.replace(/%/g, '%%');
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%')}"`;
}

export function renderUnit(p: UnitPaths): string {
  const sandgate = `${arg(p.node)} ${arg(p.cli)}`;
  const cfg = arg(p.config);
  return `# sandgate: egress gate for AI-agent sandboxes (installed by "sandgate install-service").
[Unit]
Description=sandgate egress gate for sandboxes
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStartPre=${sandgate} check -c ${cfg}
ExecStart=${sandgate} run -c ${cfg}
# Started means served: the control socket answers only once the firewall and listeners are up.
ExecStartPost=${sandgate} wait-ready -c ${cfg} --timeout 60
ExecReload=${sandgate} reload -c ${cfg}
# SIGTERM stops sandgate; its firewall rules stay installed (fail closed) until
# "sandgate firewall down -c ${cfg}".
KillMode=mixed
TimeoutStopSec=15
Restart=on-failure
RestartSec=2

# Secrets: either an environment file (secret: {env: NAME})...
EnvironmentFile=-/etc/sandgate/sandgate.env
# ...or credentials systemd reads as root and hands over in $CREDENTIALS_DIRECTORY
# (secret: {file: /run/credentials/sandgate.service/NAME}), e.g.:
#LoadCredential=llm:/etc/sandgate/secrets/llm

User=root
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=yes
StateDirectory=sandgate
StateDirectoryMode=0700
RuntimeDirectory=sandgate
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=restart
LogsDirectory=sandgate
ConfigurationDirectory=sandgate
UMask=0077
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
# AF_NETLINK: nft, ip, NFQUEUE, conntrack; AF_PACKET is not needed. ProtectSystem=strict assumes
# iptables-nft (Debian's default), which keeps no lock file in /run.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
`;
}
