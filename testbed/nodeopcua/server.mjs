// An independent OPC-UA server (node-opcua) for the agent's security
// interop tests: Basic256Sha256 with Sign and SignAndEncrypt, username
// login, X.509 user certificate login (only certificates in its user
// trust list), no anonymous access, a few changing variables (Temperature,
// Counter: +1 every 100 ms) and the live subscription count.
//
// Usage: node testbed/nodeopcua/server.mjs PORT PKI_DIR
// Environment: OPCUA_USER (default operator), OPCUA_PASSWORD (required),
// OPCUA_TRUSTED_USER_CERT (optional: a PEM or DER certificate whose holder
// may log in with an X509IdentityToken; other user certificates are
// rejected).
// Prints "READY <endpoint URL>" once it listens. Unknown client
// certificates are accepted automatically: this is a test server.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OPCUAServer, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy, DataType, Variant } from "node-opcua";

const [port, pki] = [parseInt(process.argv[2], 10), process.argv[3]];
const user = process.env.OPCUA_USER || "operator";
const password = process.env.OPCUA_PASSWORD;
if (!port || !pki || !password) {
  console.error("usage: OPCUA_PASSWORD=… node server.mjs PORT PKI_DIR");
  process.exit(2);
}

const serverCertificateManager = new OPCUACertificateManager({ automaticallyAcceptUnknownCertificate: true, rootFolder: pki });
// User certificates: only the trusted ones (unknown ones are rejected).
const userCertificateManager = new OPCUACertificateManager({ automaticallyAcceptUnknownCertificate: false, rootFolder: join(pki, "users") });
await userCertificateManager.initialize();
if (process.env.OPCUA_TRUSTED_USER_CERT) {
  const raw = readFileSync(process.env.OPCUA_TRUSTED_USER_CERT);
  const pem = raw.toString("latin1").match(/-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/);
  await userCertificateManager.trustCertificate(pem ? Buffer.from(pem[1].replace(/\s+/g, ""), "base64") : raw);
}
const server = new OPCUAServer({
  port,
  hostname: "127.0.0.1",
  serverCertificateManager,
  userCertificateManager,
  securityModes: [MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
  securityPolicies: [SecurityPolicy.Basic256Sha256],
  allowAnonymous: false,
  userManager: { isValidUser: (u, p) => u === user && p === password },
});
await server.initialize();

const space = server.engine.addressSpace;
const ns = space.getOwnNamespace();
let temperature = 20;
let counter = 0;
setInterval(() => {
  temperature = Math.round((temperature + 0.25) * 100) / 100;
  counter += 1;
}, 100);
// Subscriptions is the server's count of live subscriptions: tests check
// that a reconnecting client leaves no duplicates behind.
for (const [name, get] of [["Temperature", () => temperature], ["Counter", () => counter], ["Subscriptions", () => server.engine.currentSubscriptionCount]]) {
  ns.addVariable({
    organizedBy: space.rootFolder.objects,
    nodeId: "s=" + name,
    browseName: name,
    dataType: "Double",
    minimumSamplingInterval: 100,
    value: { get: () => new Variant({ dataType: DataType.Double, value: get() }) },
  });
}
await server.start();
console.log("READY " + server.getEndpointUrl());

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await server.shutdown(100);
    process.exit(0);
  });
}
