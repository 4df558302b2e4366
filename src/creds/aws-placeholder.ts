/**
 * What a sandbox is given instead of AWS keys (docs/credentials-aws.md). An SDK in the sandbox
 * signs with these; sandgate refuses any other access key id toward an `awsSigV4` host and signs
 * again with the real keys. Exported so that anything handing credentials to a sandbox (a metadata
 * endpoint, a generated config) gives out the same ones.
 */

/** The default `awsSigV4.placeholderKeyId`: shaped like a long-term key id (AKIA...), and not a real one (real ones are 20 characters). */
export const AWS_PLACEHOLDER_KEY_ID = 'AKIASANDGATEPLACEHOLDER';
/**
 * A secret key for the sandbox's SDK to sign with: it is never checked (sandgate drops that
 * signature), so it can be public; 40 characters like a real one.
 */
export const AWS_PLACEHOLDER_SECRET_KEY = 'sandgate/placeholder/secret/not/a/real/k';
/** Default `awsSigV4.maxBodyBytes` and `maxBodyBytes`: a body buffered to be hashed or searched stops here (413). */
export const DEFAULT_MAX_SIGNED_BODY = 16 * 1024 * 1024;
