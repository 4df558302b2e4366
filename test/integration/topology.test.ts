/**
 * The namespace topology builder, against the real kernel (runs as root). All traffic stays on
 * addresses assigned here, inside namespaces made here (docs/testing.md).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { createTopology, namespaceExists, sweepStale, TopologyError, type Topology } from '../../src/demo/topology.js';

const IP = '/usr/sbin/ip';
const NODE = process.execPath;
const PORT = 8080;

/** A TCP server inside `ns` that greets and closes; resolves once it listens. */
async function startServer(topo: Topology, ns: string, host: string): Promise<ChildProcess> {
  const script = "const [h,p]=process.argv.slice(1);require('net').createServer(s=>s.end('hi\\n'))" + ".listen(Number(p),h,()=>console.log('ready'))";
  const child = topo.spawn(ns, NODE, ['-e', script, host, String(PORT)]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    child.once('exit', (code) => reject(new Error(`server in ${ns} exited ${code}: ${err}`)));
  });
  return child;
}

/** Connects from `ns` with a timeout: 'ok' (read the greeting), 'timeout' or 'error:<code>'. */
async function connect(topo: Topology, ns: string, host: string, timeoutMs = 1000): Promise<string> {
  const script =
    "const [h,p,t]=process.argv.slice(1);const s=require('net').connect(Number(p),h);" +
    "const k=setTimeout(()=>{console.log('timeout');process.exit(0)},Number(t));" +
    "s.on('data',d=>{if(String(d)==='hi\\n'){console.log('ok');process.exit(0)}});" +
    "s.on('error',e=>{clearTimeout(k);console.log('error:'+e.code);process.exit(0)})";
  const r = await topo.exec(ns, NODE, ['-e', script, host, String(PORT), String(timeoutMs)], {
    timeoutMs: timeoutMs + 3000,
  });
  if (r.code !== 0) throw new Error(`client in ${ns} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

function hasPing(): boolean {
  try {
    execFileSync('which', ['ping'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function deadPid(): number {
  for (let pid = 999_999; ; pid++) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

test.before(async () => {
  await sweepStale();
});

test('1 sandbox + 2 upstreams: names, addresses, reachability, no forwarding, destroy', async (t) => {
  const started = performance.now();
  const topo = await createTopology({
    sandboxes: [{ name: 'agent', subnet: 1 }],
    upstreams: [
      { name: 'api', subnet: 2 },
      { name: 'other', subnet: 3 },
    ],
  });
  const elapsed = performance.now() - started;
  t.log(`created in ${elapsed.toFixed(0)} ms`);
  t.teardown(() => topo.destroy());

  t.regex(topo.prefix, new RegExp(`^sg-${process.pid}-[0-9a-f]{4}-$`));
  t.is(topo.hostNs, `${topo.prefix}h`);
  t.is(topo.ns('agent'), `${topo.prefix}agent`);
  t.is(topo.ns('api'), `${topo.prefix}api`);
  t.deepEqual(topo.sandboxes, ['agent']);
  t.deepEqual(topo.upstreams, ['api', 'other']);
  t.is(topo.addr('agent'), '10.77.1.2');
  t.is(topo.hostAddr('agent'), '10.77.1.1');
  t.is(topo.addr('other'), '10.77.3.2');
  t.is(topo.hostAddr('other'), '10.77.3.1');
  t.is(topo.hostIface('agent'), 'sbx-agent');
  t.is(topo.hostIface('api'), 'up-api');
  t.is(topo.addr6('agent'), undefined);
  t.is(topo.hostAddr6('api'), undefined);
  t.throws(() => topo.addr('nope'));

  const all = [topo.hostNs, topo.ns('agent'), topo.ns('api'), topo.ns('other')];
  for (const ns of all) t.true(namespaceExists(ns), ns);

  // The kernel's view: host-side veths up with .1, node side renamed eth0 with .2 and a default
  // route via the host side; no IPv6 global addresses.
  const hostAddrs = execFileSync(IP, ['-n', topo.hostNs, '-br', 'addr'], { encoding: 'utf8' });
  t.regex(hostAddrs, /^sbx-agent@\S+\s+UP\s+10\.77\.1\.1\/24/m);
  t.regex(hostAddrs, /^up-api@\S+\s+UP\s+10\.77\.2\.1\/24/m);
  t.regex(hostAddrs, /^up-other@\S+\s+UP\s+10\.77\.3\.1\/24/m);
  t.notRegex(hostAddrs, /fd77:/);
  const nodeAddrs = execFileSync(IP, ['-n', topo.ns('api'), '-br', 'addr'], { encoding: 'utf8' });
  t.regex(nodeAddrs, /^lo\s+UNKNOWN\s+127\.0\.0\.1\/8/m);
  t.regex(nodeAddrs, /^eth0@\S+\s+UP\s+10\.77\.2\.2\/24/m);
  const routes = execFileSync(IP, ['-n', topo.ns('agent'), 'route'], { encoding: 'utf8' });
  t.regex(routes, /^default via 10\.77\.1\.1 dev eth0/m);

  // /etc overrides are in place and `ip netns exec` mounts them over /etc.
  t.is(readFileSync(`/etc/netns/${topo.ns('agent')}/resolv.conf`, 'utf8'), 'nameserver 10.77.1.1\n');
  t.is(readFileSync(`/etc/netns/${topo.ns('other')}/resolv.conf`, 'utf8'), 'nameserver 10.77.3.1\n');
  const resolv = await topo.exec(topo.ns('agent'), 'cat', ['/etc/resolv.conf', '/etc/hosts']);
  t.is(resolv.code, 0);
  t.regex(resolv.stdout, /^nameserver 10\.77\.1\.1$/m);
  t.regex(resolv.stdout, /^127\.0\.0\.1\s+localhost$/m);

  // Forwarding is off in the host namespace whatever the root namespace says.
  const fwd = await topo.exec(topo.hostNs, 'cat', ['/proc/sys/net/ipv4/ip_forward']);
  t.is(fwd.stdout.trim(), '0');

  // Each node reaches the host side of its own link.
  const hostSrv = await startServer(topo, topo.hostNs, '0.0.0.0');
  t.is(await connect(topo, topo.ns('agent'), topo.hostAddr('agent')), 'ok');
  t.is(await connect(topo, topo.ns('api'), topo.hostAddr('api')), 'ok');
  if (hasPing()) {
    const ping = await topo.exec(topo.ns('agent'), 'ping', ['-c1', '-W1', topo.hostAddr('agent')]);
    t.is(ping.code, 0, ping.stdout + ping.stderr);
  } else {
    t.log('ping not installed: reachability checked over TCP only');
  }

  // An upstream server is reachable from the host namespace (so the next failure means
  // something) but not from the sandbox: nothing routes between links.
  const upSrv = await startServer(topo, topo.ns('api'), topo.addr('api'));
  t.is(await connect(topo, topo.hostNs, topo.addr('api')), 'ok');
  const blocked = await connect(topo, topo.ns('agent'), topo.addr('api'), 1000);
  t.log(`sandbox -> upstream: ${blocked}`);
  t.not(blocked, 'ok');

  // exec: non-zero exit is a result, a timeout kills (code -1), input reaches stdin,
  // foreign namespaces are refused.
  const three = await topo.exec(topo.hostNs, NODE, ['-e', 'process.exit(3)']);
  t.is(three.code, 3);
  const t0 = performance.now();
  const slow = await topo.exec(topo.hostNs, NODE, ['-e', 'setTimeout(()=>{},10000)'], { timeoutMs: 300 });
  t.is(slow.code, -1);
  t.true(performance.now() - t0 < 3000);
  const echo = await topo.exec(topo.hostNs, 'cat', [], { input: 'piped\n' });
  t.is(echo.stdout, 'piped\n');
  const env = await topo.exec(topo.hostNs, NODE, ['-e', 'console.log(process.env.SG_T)'], {
    env: { ...process.env, SG_T: 'x1' },
  });
  t.is(env.stdout.trim(), 'x1');
  t.throws(() => topo.spawn('not-ours', 'true', []));

  await topo.destroy();
  for (const ns of all) {
    t.false(namespaceExists(ns), ns);
    t.false(existsSync(`/etc/netns/${ns}`), `/etc/netns/${ns}`);
  }
  // destroy() killed the servers it spawned.
  t.true(hostSrv.exitCode !== null || hostSrv.signalCode !== null);
  t.true(upSrv.exitCode !== null || upSrv.signalCode !== null);
  await t.notThrowsAsync(() => topo.destroy());
  t.throws(() => topo.spawn(topo.hostNs, 'true', []), { message: /destroyed/ });
});

test('ipv6: ULA pair per link, default v6 route, reachable host side', async (t) => {
  const topo = await createTopology({
    sandboxes: [{ name: 'agent', subnet: 12 }],
    upstreams: [{ name: 'api', subnet: 13 }],
    ipv6: true,
  });
  t.teardown(() => topo.destroy());
  t.is(topo.addr6('agent'), 'fd77:12::2');
  t.is(topo.hostAddr6('agent'), 'fd77:12::1');
  t.is(topo.addr6('api'), 'fd77:13::2');
  t.is(topo.addr('api'), '10.77.13.2');

  const node6 = execFileSync(IP, ['-n', topo.ns('agent'), '-6', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
  t.regex(node6, /inet6 fd77:12::2\/64 scope global nodad/);
  const host6 = execFileSync(IP, ['-n', topo.hostNs, '-6', 'addr', 'show', 'dev', 'up-api'], { encoding: 'utf8' });
  t.regex(host6, /inet6 fd77:13::1\/64 scope global nodad/);
  const route6 = execFileSync(IP, ['-n', topo.ns('agent'), '-6', 'route'], { encoding: 'utf8' });
  t.regex(route6, /^default via fd77:12::1 dev eth0/m);

  await startServer(topo, topo.hostNs, '::');
  t.is(await connect(topo, topo.ns('agent'), topo.hostAddr6('agent') ?? ''), 'ok');
  t.is(await connect(topo, topo.ns('agent'), topo.hostAddr('agent')), 'ok');
});

test('invalid specs are rejected before anything is made', async (t) => {
  const prefix = `sg-${process.pid}-inv-${randomBytes(2).toString('hex')}-`;
  const bad = [
    { sandboxes: [{ name: 'a', subnet: 1 }], upstreams: [{ name: 'b', subnet: 1 }] },
    { sandboxes: [{ name: 'a', subnet: 1 }], upstreams: [{ name: 'a', subnet: 2 }] },
    { sandboxes: [{ name: 'A/b', subnet: 1 }], upstreams: [] },
    { sandboxes: [{ name: 'a', subnet: 256 }], upstreams: [] },
    { sandboxes: [{ name: 'h', subnet: 1 }], upstreams: [] },
    // A namespace name is a file name: at most 255 bytes.
    { sandboxes: [{ name: 'a'.repeat(250), subnet: 1 }], upstreams: [] },
    // Both truncate to the 15-character interface name sbx-abcdefghijk.
    {
      sandboxes: [
        { name: 'abcdefghijk1', subnet: 1 },
        { name: 'abcdefghijk2', subnet: 2 },
      ],
      upstreams: [],
    },
  ];
  for (const spec of bad) {
    const err = await t.throwsAsync(() => createTopology({ ...spec, prefix }), { instanceOf: TopologyError });
    t.is(err?.step, 'validate spec');
  }
  t.false(namespaceExists(`${prefix}h`));
  t.false(namespaceExists(`${prefix}a`));
});

test('a failure midway removes what was made and names the step', async (t) => {
  // A regular file where the node's /etc/netns directory should go makes that step fail after
  // every namespace exists and the host's /etc/netns files are written.
  const prefix = `sg-${process.pid}-mid-${randomBytes(2).toString('hex')}-`;
  const names = [`${prefix}h`, `${prefix}agent`, `${prefix}api`];
  mkdirSync('/etc/netns', { recursive: true });
  writeFileSync(`/etc/netns/${prefix}api`, 'in the way\n');
  t.teardown(() => rmSync(`/etc/netns/${prefix}api`, { force: true }));
  const err = await t.throwsAsync(() => createTopology({ prefix, sandboxes: [{ name: 'agent', subnet: 1 }], upstreams: [{ name: 'api', subnet: 2 }] }), {
    instanceOf: TopologyError,
  });
  t.is(err?.step, 'write /etc/netns files');
  for (const ns of names) {
    t.false(namespaceExists(ns), ns);
    t.false(existsSync(`/etc/netns/${ns}`), `/etc/netns/${ns}`);
  }
});

test('sweepStale removes namespaces of dead pids and keeps live ones', async (t) => {
  const dead = `sg-${deadPid()}-test-${randomBytes(2).toString('hex')}-x`;
  const alive = `sg-${process.pid}-test-${randomBytes(2).toString('hex')}-x`;
  execFileSync(IP, ['netns', 'add', dead]);
  execFileSync(IP, ['netns', 'add', alive]);
  t.teardown(() => {
    for (const ns of [dead, alive]) if (namespaceExists(ns)) execFileSync(IP, ['netns', 'del', ns]);
  });
  t.true(namespaceExists(dead));

  const removed = await sweepStale();
  // A concurrently running test file may sweep `dead` first, so only require that it is gone
  // and that everything this sweep removed had a dead pid.
  t.false(namespaceExists(dead));
  t.true(namespaceExists(alive));
  t.false(removed.includes(alive));
  for (const name of removed) {
    const pid = Number(/^sg-(\d+)-/.exec(name)?.[1]);
    t.throws(() => process.kill(pid, 0), undefined, `${name} has a live pid`);
  }
});
