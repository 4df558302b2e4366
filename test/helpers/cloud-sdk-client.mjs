// Runs a cloud SDK's default credential chain inside a sandbox and prints one JSON line.
// argv: gcp API_URL   -> google-auth-library's GoogleAuth (Application Default Credentials):
//                        {token, projectId, email, api: {status, body}} or {error}
//       aws            -> @aws-sdk/credential-provider-node's defaultProvider():
//                        {accessKeyId, secretAccessKey, sessionToken, expiration} or {error}
//       s3 BUCKET      -> @aws-sdk/client-s3 with no credentials given (its default chain; region
//                        from AWS_REGION): PutObject then GetObject of e2e.txt:
//                        {got, seen} or {error, name, seen}; seen: every byte its sockets received
const [kind, url] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
try {
  if (kind === 'gcp') {
    const { GoogleAuth } = await import('google-auth-library');
    const auth = new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'] });
    const token = await auth.getAccessToken();
    const projectId = await auth.getProjectId();
    const { client_email: email } = await auth.getCredentials();
    const client = await auth.getClient();
    const r = await client.request({ url, validateStatus: () => true });
    out({ token, projectId, email, api: { status: r.status, body: r.data } });
  } else if (kind === 's3') {
    // A tap on every socket the SDK opens (the metadata address and S3): what the sandbox received.
    const http = await import('node:http');
    const https = await import('node:https');
    const seen = [];
    const tapped = new WeakSet();
    for (const mod of [http.default, https.default]) {
      const request = mod.request;
      mod.request = (...a) => {
        const req = request(...a);
        req.on('socket', (s) => {
          if (tapped.has(s)) return;
          tapped.add(s);
          s.on('data', (d) => seen.push(Buffer.from(d).toString('latin1')));
        });
        return req;
      };
    }
    const { S3Client, PutObjectCommand, GetObjectCommand } = await import('@aws-sdk/client-s3');
    const c = new S3Client({ maxAttempts: 1 });
    try {
      await c.send(new PutObjectCommand({ Bucket: url, Key: 'e2e.txt', Body: 'put by the default chain' }));
      const r = await c.send(new GetObjectCommand({ Bucket: url, Key: 'e2e.txt' }));
      out({ got: await r.Body.transformToString(), seen: seen.join('') });
    } catch (err) {
      out({ error: String(err?.message ?? err).slice(0, 300), name: err?.name, seen: seen.join('') });
    }
  } else {
    const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
    const c = await defaultProvider()();
    out({ accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken, expiration: c.expiration?.toISOString() });
  }
} catch (err) {
  out({ error: String(err?.message ?? err).slice(0, 300), name: err?.name });
}
