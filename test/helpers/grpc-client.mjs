// A gRPC client for integration tests (@grpc/grpc-js), run in a sandbox namespace.
// argv: CA_FILE HOST:PORT PLACEHOLDER
// Calls sg.Echo (test/helpers/fake-grpc-server.mjs) with `authorization: Bearer PLACEHOLDER`:
// Unary, Stream (3 messages) and Secret. Prints one JSON line {unary, stream, secret}: each
// {ok, value?, code?, details?, trailer?}.
import grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';

const [caFile, target, placeholder] = process.argv.slice(2);
const bytes = { requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b };
const Echo = grpc.makeGenericClientConstructor(
  {
    unary: { path: '/sg.Echo/Unary', requestStream: false, responseStream: false, ...bytes },
    stream: { path: '/sg.Echo/Stream', requestStream: false, responseStream: true, ...bytes },
    secret: { path: '/sg.Echo/Secret', requestStream: false, responseStream: false, ...bytes },
  },
  'Echo',
);
const client = new Echo(target, grpc.credentials.createSsl(readFileSync(caFile)));
const md = () => {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${placeholder}`);
  return m;
};
const deadline = () => ({ deadline: Date.now() + 8000 });
const unaryCall = (name, body) =>
  new Promise((resolve) => {
    let result;
    let trailer;
    // The callback and the 'status' event come in either order: the answer waits for both.
    const done = () => {
      if (result !== undefined && trailer !== undefined) resolve({ ...result, trailer: trailer[0] });
    };
    const call = client[name](Buffer.from(body), md(), deadline(), (err, res) => {
      result = err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res.toString('utf8') };
      done();
    });
    call.on('status', (s) => {
      trailer = s.metadata.get('x-echo-auth');
      done();
    });
  });
const streamCall = () =>
  new Promise((resolve) => {
    const got = [];
    const call = client.stream(Buffer.from('3'), md(), deadline());
    call.on('data', (d) => got.push(JSON.parse(d.toString('utf8'))));
    call.on('error', (err) => resolve({ ok: false, code: err.code, details: err.details, got }));
    call.on('end', () => resolve({ ok: true, got }));
  });
const unary = await unaryCall('unary', 'hello');
const stream = await streamCall();
const secret = await unaryCall('secret', 'x');
process.stdout.write(JSON.stringify({ unary, stream, secret }) + '\n');
client.close();
