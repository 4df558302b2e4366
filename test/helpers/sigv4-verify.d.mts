export interface VerifyRequest {
  method: string;
  path: string;
  query?: string;
  headers: Record<string, string | string[] | undefined>;
  body?: Buffer;
}
export interface VerifyKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}
export function verifySigV4(
  req: VerifyRequest,
  keys: VerifyKeys,
): Promise<{ ok: true; mode: string; service: string; region: string } | { ok: false; why: string }>;
