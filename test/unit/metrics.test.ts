import test from 'ava';
import { Registry } from 'prom-client';
import { AuditMetrics } from '../../src/metrics/audit-metrics.js';
import type { AuditFields } from '../../src/audit/logger.js';

/** metric name -> "label=value,..." -> value, from the registry's own text exposition. */
async function scrape(reg: Registry): Promise<Map<string, Map<string, number>>> {
  const out = new Map<string, Map<string, number>>();
  for (const line of (await reg.metrics()).split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = (m[2] ?? '')
      .split(/,(?=[a-z_]+=")/)
      .filter(Boolean)
      .sort()
      .join(',');
    if (!out.has(m[1]!)) out.set(m[1]!, new Map());
    out.get(m[1]!)!.set(labels, Number(m[3]));
  }
  return out;
}

function metrics(lines: AuditFields[]): { reg: Registry; m: AuditMetrics } {
  const reg = new Registry();
  const m = new AuditMetrics(reg);
  for (const l of lines) m.observe(l);
  return { reg, m };
}

const A = 'sandbox="agent"';

test('decisions by kind, sandbox, rule and decision; sampled summaries add their counts', async (t) => {
  const { reg } = metrics([
    { event: 'conn', sandbox: 'agent', decision: 'allow', proto: 'tls', rule: 'policies.default.allow[0]', host: 'api.example.test' },
    { event: 'conn', sandbox: 'agent', decision: 'allow', proto: 'tls', rule: 'policies.default.allow[0]', host: 'api.example.test' },
    { event: 'conn', sandbox: 'agent', decision: 'deny', proto: 'tls', host: 'evil.example.test' },
    { event: 'conn', decision: 'deny', reason: 'source is not a configured sandbox' },
    { event: 'http', sandbox: 'agent', decision: 'allow', proto: 'tls', rule: 'policies.default.allow[1]', status: 200, ms: 42, bytesIn: 100, bytesOut: 20 },
    { event: 'dns', sandbox: 'agent', decision: 'allow', rule: 'policies.default.allow[0]', rcode: 'NOERROR' },
    { event: 'dns', sandbox: 'agent', decision: 'deny', rcode: 'NXDOMAIN' },
    { event: 'dns', sandbox: 'agent', decision: 'deny', suppressed: 2893, domains: { 'evil.test': 2893 } },
    { event: 'dns', sandbox: 'agent', decision: 'deny', refused: 40, rcode: 'REFUSED' },
    { event: 'packet', sandbox: 'agent', decision: 'deny', proto: 'icmp', reason: 'icmp is not allowed' },
    { event: 'packet', sandbox: 'agent', decision: 'deny', summary: true, count: 500, top: {} },
    { event: 'close', sandbox: 'agent', proto: 'tls', bytesIn: 1000, bytesOut: 300 },
  ]);
  const d = (await scrape(reg)).get('sandgate_decisions_total')!;
  t.is(d.get(`decision="allow",kind="tls",rule="policies.default.allow[0]",${A}`), 2);
  t.is(d.get(`decision="deny",kind="tls",rule="",${A}`), 1);
  t.is(d.get('decision="deny",kind="tcp",rule="",sandbox=""'), 1);
  t.is(d.get(`decision="allow",kind="http",rule="policies.default.allow[1]",${A}`), 1);
  t.is(d.get(`decision="allow",kind="dns",rule="policies.default.allow[0]",${A}`), 1);
  t.is(d.get(`decision="deny",kind="dns",rule="",${A}`), 1 + 2893 + 40);
  t.is(d.get(`decision="deny",kind="icmp",rule="",${A}`), 1);
  t.is(d.get(`decision="deny",kind="ip",rule="",${A}`), 500, 'a packet summary names no protocol');
  const s = await scrape(reg);
  t.is(s.get('sandgate_bytes_total')!.get(`direction="in",${A}`), 1100);
  t.is(s.get('sandgate_bytes_total')!.get(`direction="out",${A}`), 320);
  t.is(s.get('sandgate_dns_answers_total')!.get(`rcode="NXDOMAIN",${A}`), 1);
  t.is(s.get('sandgate_dns_answers_total')!.get(`rcode="REFUSED",${A}`), 1, 'a burst line is one answer line');
  t.is(s.get('sandgate_request_duration_seconds_count')!.get('decision="allow"'), 1);
  t.is(s.get('sandgate_request_duration_seconds_bucket')!.get('decision="allow",le="0.025"'), 0);
  t.is(s.get('sandgate_request_duration_seconds_bucket')!.get('decision="allow",le="0.05"'), 1);
  t.is(s.get('sandgate_audit_lines_total')!.get('event="dns"'), 4);
});

test("upstream errors: conn and http lines with error, close lines whose error is the upstream's; not a sandbox's", async (t) => {
  const { reg } = metrics([
    { event: 'conn', sandbox: 'agent', decision: 'allow', proto: 'tls', error: 'cannot resolve x (ENOTFOUND)' },
    { event: 'close', sandbox: 'agent', proto: 'tcp', error: 'upstream: ECONNRESET' },
    { event: 'close', sandbox: 'agent', proto: 'tcp', error: 'sandbox: ETIMEDOUT' },
    { event: 'http', sandbox: 'agent', decision: 'allow', status: 502, error: 'upstream reset' },
    { event: 'http', sandbox: 'agent', decision: 'allow', status: 499, error: 'sandbox closed the connection' },
    { event: 'error', reason: 'connection handler failed: x' },
    { event: 'config', action: 'rejected' },
    { event: 'config', action: 'reloaded' },
  ]);
  const s = await scrape(reg);
  const e = s.get('sandgate_upstream_errors_total')!;
  t.is(e.get(`kind="tls",${A}`), 1);
  t.is(e.get(`kind="tcp",${A}`), 1);
  t.is(e.get(`kind="http",${A}`), 1);
  t.is(s.get('sandgate_audit_lines_total')!.get('event="error"'), 1);
  t.is(s.get('sandgate_config_reloads_total')!.get('result="rejected"'), 1);
  t.is(s.get('sandgate_config_reloads_total')!.get('result="reloaded"'), 1);
});

test('labels never take a value the sandbox chooses: a host, an odd protocol or rcode, a made-up decision', async (t) => {
  const { reg } = metrics([
    { event: 'conn', sandbox: 'agent', decision: 'allow', proto: 'x-evil' as never, host: 'secret.evil.test' },
    { event: 'dns', sandbox: 'agent', decision: 'deny', rcode: 'TYPE-evil' },
    { event: 'dns', sandbox: 'agent', decision: 'exfil' as never },
    { event: 'weird' as never },
  ]);
  const text = await reg.metrics();
  t.false(text.includes('evil'));
  t.false(text.includes('exfil'));
  const s = await scrape(reg);
  t.is(s.get('sandgate_decisions_total')!.get(`decision="allow",kind="tcp",rule="",${A}`), 1);
  t.is(s.get('sandgate_dns_answers_total')!.get(`rcode="other",${A}`), 1);
  t.is(s.get('sandgate_audit_lines_total')!.get('event="other"'), 1);
});

test('tripwire and quarantine lines are counted under their own event', async (t) => {
  const { reg } = metrics([
    { event: 'tripwire', sandbox: 'agent', decision: 'deny', proto: 'http', credential: 'k' },
    { event: 'quarantine', sandbox: 'agent', action: 'start' },
  ]);
  const s = await scrape(reg);
  t.is(s.get('sandgate_audit_lines_total')!.get('event="tripwire"'), 1);
  t.is(s.get('sandgate_audit_lines_total')!.get('event="quarantine"'), 1);
});
