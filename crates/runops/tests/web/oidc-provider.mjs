// A real OpenID Connect provider for the SSO browser test: the `oidc-provider` npm
// package (its development login and consent pages), one public client that must use
// PKCE, ID tokens carrying the e-mail. Any login name is accepted as the e-mail. ID
// tokens live an hour, except those of logins starting with `brief`: 30 seconds (the
// web app then asks for a new sign-in before creating a task).
//
// env: OIDC_PROVIDER_MODULE (path to oidc-provider's lib/index.js), PORT, REDIRECT_URI,
// CLIENT_ID.
const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE);

const port = Number(process.env.PORT);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: [process.env.REDIRECT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  pkce: { methods: ['S256'], required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  conformIdTokenClaims: false,
  ttl: {
    IdToken: (ctx, token) => (String(token.available.sub || '').startsWith('brief') ? 30 : 3600),
  },
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() { return { sub: id, email: id, email_verified: true }; },
  }),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['runops-test-only'] },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${port}`));
