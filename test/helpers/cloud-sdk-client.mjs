// Runs a cloud SDK's default credential chain inside a sandbox and prints one JSON line.
// argv: gcp API_URL   -> google-auth-library's GoogleAuth (Application Default Credentials):
//                        {token, projectId, email, api: {status, body}} or {error}
//       aws            -> @aws-sdk/credential-provider-node's defaultProvider():
//                        {accessKeyId, secretAccessKey, sessionToken, expiration} or {error}
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
  } else {
    const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
    const c = await defaultProvider()();
    out({ accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken, expiration: c.expiration?.toISOString() });
  }
} catch (err) {
  out({ error: String(err?.message ?? err).slice(0, 300), name: err?.name });
}
