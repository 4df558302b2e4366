// A gRPC upstream for integration tests (@grpc/grpc-js over TLS, so HTTP/2 by ALPN), run in an
// upstream namespace. argv: --port N --tls CERT KEY --expect-auth VALUE
// Service sg.Echo, messages are raw bytes (no protobuf):
//   Unary:  answers JSON {auth, got, authorization}: auth ok|missing|wrong, got: the request as
//           text, authorization: the value received (an echo, which sandgate must scrub); the
//           trailing metadata carries x-echo-auth with the same value
//   Stream: server-streaming, N (the request as a number) messages {i}
//   Chat:   bidirectional streaming: each message comes back as {echo: the message as text}
//   Secret: never listed by the tests' rules (a call reaching it is a bug)
// Calls whose authorization metadata is not exactly VALUE fail with UNAUTHENTICATED.
// Prints {"listening":PORT}, then one {"call":{method, auth}} line per call.
import grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k, n = 1) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + n] : undefined;
};
const expected = opt('--expect-auth');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const bytes = { requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b };
export const service = {
  unary: { path: '/sg.Echo/Unary', requestStream: false, responseStream: false, ...bytes },
  stream: { path: '/sg.Echo/Stream', requestStream: false, responseStream: true, ...bytes },
  secret: { path: '/sg.Echo/Secret', requestStream: false, responseStream: false, ...bytes },
  chat: { path: '/sg.Echo/Chat', requestStream: true, responseStream: true, ...bytes },
};
const authOf = (md) => {
  const v = md.get('authorization');
  if (v.length === 0) return 'missing';
  return v.length === 1 && v[0] === expected ? 'ok' : 'wrong';
};
const server = new grpc.Server();
server.addService(service, {
  unary(call, cb) {
    const auth = authOf(call.metadata);
    say({ call: { method: 'Unary', auth } });
    if (auth !== 'ok') return cb({ code: grpc.status.UNAUTHENTICATED, details: `auth ${auth}` });
    const value = String(call.metadata.get('authorization')[0]);
    const trailer = new grpc.Metadata();
    trailer.set('x-echo-auth', value);
    cb(null, Buffer.from(JSON.stringify({ auth, got: call.request.toString('utf8'), authorization: value })), trailer);
  },
  stream(call) {
    const auth = authOf(call.metadata);
    say({ call: { method: 'Stream', auth } });
    if (auth !== 'ok') {
      call.destroy({ code: grpc.status.UNAUTHENTICATED, details: `auth ${auth}` });
      return;
    }
    const n = Number(call.request.toString('utf8'));
    for (let i = 0; i < n; i++) call.write(Buffer.from(JSON.stringify({ i })));
    call.end();
  },
  chat(call) {
    const auth = authOf(call.metadata);
    say({ call: { method: 'Chat', auth } });
    if (auth !== 'ok') {
      call.destroy({ code: grpc.status.UNAUTHENTICATED, details: `auth ${auth}` });
      return;
    }
    call.on('data', (m) => call.write(Buffer.from(JSON.stringify({ echo: m.toString('utf8') }))));
    call.on('end', () => call.end());
  },
  secret(call, cb) {
    say({ call: { method: 'Secret', auth: authOf(call.metadata) } });
    cb(null, Buffer.from('secret'));
  },
});
const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(opt('--tls', 1)), private_key: readFileSync(opt('--tls', 2)) }], false);
server.bindAsync(`0.0.0.0:${opt('--port') ?? 0}`, creds, (err, port) => {
  if (err) throw err;
  say({ listening: port });
});
