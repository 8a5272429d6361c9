/**
 * A private CA made with openssl (child processes with argument arrays, no shell) in a test's folder: the CA, a
 * server certificate for 127.0.0.1 and DNS name `consul.test` (subjectAltName), a client certificate, and a second,
 * unrelated CA ("wrong CA") with its own client certificate. Keys are EC P-256 (fast to make).
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const SERVER_DNS = 'consul.test';

export interface TestPki {
  dir: string;
  /** File paths. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  /** PEM texts for the test server. */
  serverTls: { key: Buffer; cert: Buffer; ca: Buffer };
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], dir);
  await openssl(['req', '-x509', '-new', '-key', `${name}.key`, '-sha256', '-days', '2', '-subj', `/CN=${name} test CA`, '-out', `${name}.pem`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

/** key + CSR + certificate signed by `ca`, with the extensions in `ext` (an extfile's lines). */
async function makeLeaf(dir: string, ca: string, name: string, cn: string, ext: string[]): Promise<void> {
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], dir);
  await openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`], dir);
  writeFileSync(path.join(dir, `${name}.ext`), `${ext.join('\n')}\n`);
  await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-sha256',
    '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
}

export async function makeTestPki(dir: string): Promise<TestPki> {
  await makeCa(dir, 'ca');
  await makeCa(dir, 'other-ca');
  await makeLeaf(dir, 'ca', 'server', 'consul server', [`subjectAltName=IP:127.0.0.1,DNS:${SERVER_DNS}`, 'extendedKeyUsage=serverAuth', 'keyUsage=critical,digitalSignature']);
  await makeLeaf(dir, 'ca', 'client', 'vipcast', ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']);
  await makeLeaf(dir, 'other-ca', 'other-client', 'vipcast elsewhere', ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']);
  const p = (f: string): string => path.join(dir, f);
  return {
    dir, ca: p('ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key'),
    otherCa: p('other-ca.pem'), otherClientCert: p('other-client.pem'), otherClientKey: p('other-client.key'),
    serverTls: { key: readFileSync(p('server.key')), cert: readFileSync(p('server.pem')), ca: readFileSync(p('ca.pem')) },
  };
}
