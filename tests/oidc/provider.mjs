// A real OpenID Connect provider for kproxy's tests, on loopback only.
//
// Usage: node provider.mjs SETTINGS.json
//
// The settings file, written by tests/oidc/harness.py, carries everything a test may
// want to vary: the port (0 for an ephemeral one, or the previous port on a restart so
// the issuer stays the same), the TLS certificate and key files, the private key set
// (so a restart can rotate keys), the clients, the accounts and the token lifetimes.
// What is fixed here is the shape every test relies on: the device flow, the
// authorization code flow with PKCE, the client credentials grant, and JWT access
// tokens for one resource whose audience the settings name.
//
// Once listening, one line is printed on stdout:
//   {"ready": true, "issuer": "https://127.0.0.1:PORT", "port": PORT}

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function findAccount(_ctx, accountId) {
  const account = settings.accounts[accountId];
  if (account === undefined) {
    return undefined;
  }
  return {
    accountId,
    async claims() {
      return {
        sub: accountId,
        email: account.email,
        email_verified: true,
        groups: account.groups,
      };
    },
  };
}

function resourceServer(_ctx, indicator) {
  const { resource } = settings;
  if (indicator !== resource.indicator) {
    throw new errors.InvalidTarget();
  }
  return {
    scope: resource.scope,
    audience: resource.audience,
    accessTokenTTL: settings.ttl.AccessToken,
    accessTokenFormat: 'jwt',
  };
}

function configuration() {
  return {
    clients: settings.clients,
    jwks: settings.jwks,
    findAccount,
    cookies: { keys: [settings.cookieKey] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'groups'],
    // kproxy verifies ID tokens, so the claims it maps must be in them rather than
    // only at the userinfo endpoint.
    conformIdTokenClaims: false,
    ttl: settings.ttl,
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: resourceServer,
      },
    },
  };
}

const tls = {
  cert: readFileSync(settings.tls.certFile),
  key: readFileSync(settings.tls.keyFile),
};
const server = createServer(tls);

server.listen(settings.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ ready: true, issuer, port })}\n`);
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
