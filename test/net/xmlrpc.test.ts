import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { cli, getJson, NODE, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

const run = promisify(execFile)
const SLEEPER = 'name: rpc-sleeper\nversion: "1"\ndriver: process\ncommand: "sleep 600"\nresources: { cpu: 0.05, memory: 16 }\n'

/** The paper's XML-RPC interface at /RPC2, used by a real third-party client: Python's xmlrpc.client. */
describe('XML-RPC', () => {
  const hosts: TestHost[] = []
  let a: TestHost
  let alice: string

  before(async () => {
    const dir = await tempDir('xmlrpc')
    alice = join(dir, 'alice.pem')
    a = await startHost({ name: 'rpc-a' })
    hosts.push(a, await startHost({ name: 'rpc-b', bootstrap: [a] }))
    await writeFile(join(dir, 'sleeper.yaml'), SLEEPER)
    await cli(a, alice, ['template', 'import', join(dir, 'sleeper.yaml')])
  })

  after(async () => {
    await stopHosts(hosts)
  })

  it('lets Python search, deploy (signed), pause and resume an instance, and refuses an unsigned pause', async () => {
    const xenos = [NODE, '--disable-warning=ExperimentalWarning', join(ROOT, 'src/cli/main.ts'), '--api', a.api, '--key', alice]
    const { stdout } = await run('python3', [join(ROOT, 'test/helpers/xmlrpc_client.py'), a.api, 'rpc-sleeper', ...xenos], { timeout: 120_000 })
    const seen = JSON.parse(stdout)
    for (const m of ['system.listMethods', 'system.methodHelp', 'templates.search', 'instances.search', 'instances.deploy', 'instance.pause', 'instance.resume', 'instance.migrate', 'instance.replicate', 'instance.metrics']) assert.ok(seen.methods.includes(m), m)
    assert.equal(seen.deployed, 'from-python')
    assert.equal(seen.unsigned, 'UNAUTHENTICATED')
    assert.equal(seen.paused, 'paused')
    assert.equal(seen.resumed, 'running')
    assert.equal(seen.cpu, true)
    assert.deepEqual(seen.searched, [seen.instance], 'a search finds it')
    const view = (await getJson(a, '/v1/instances')).instances.find((i: any) => i.id === seen.instance)
    assert.equal(view?.owner, (await cli(a, alice, ['instance', 'show', seen.instance])).owner, 'deployed as the owner who signed the parts')
  })

  it('answers a malformed call, an unknown method and a bad argument with faults, and documents its methods', async () => {
    const call = async (body: string): Promise<string> => await (await fetch(`${a.api}/RPC2`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body })).text()
    assert.match(await call('<methodCall><methodName>nope</methodName><params></params></methodCall>'), /<name>faultCode<\/name><value><int>404<\/int>[\s\S]*no method nope/)
    assert.match(await call('<?xml version="1.0"?><methodCall'), /<name>faultCode<\/name><value><int>400<\/int>/)
    assert.match(await call('<methodCall><methodName>templates.get</methodName><params><param><value><int>3</int></value></param></params></methodCall>'), /argument 1 \(template\) must be a string/)
    const docs = await readFile(join(ROOT, 'docs/xmlrpc.md'), 'utf8')
    const methods = (await call('<methodCall><methodName>system.listMethods</methodName><params></params></methodCall>')).match(/<string><!\[CDATA\[[\w.]+\]\]><\/string>|<string>[\w.]+<\/string>/g)?.map(m => m.replace(/<[^>]*>|<!\[CDATA\[|\]\]>/g, '')) ?? []
    assert.ok(methods.length > 10, methods.join(' '))
    for (const m of methods.filter(m => !m.startsWith('system.'))) assert.ok(docs.includes(`\`${m}(`), `docs/xmlrpc.md lists ${m}`)
    assert.match(await call('<methodCall><methodName>system.methodHelp</methodName><params><param><value><string>instance.migrate</string></value></param></params></methodCall>'), /Move a running instance live/)
  })
})
