import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import { loadOrCreateUserKey } from '../../src/cli/keys.ts'
import { cli, eventually, getJson, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { skipWithoutQemu } from '../helpers/vm.ts'

const CHROMIUM = '/usr/bin/chromium'
/** Where the test leaves its screenshots, to look at. */
const SHOTS = join(ROOT, '.cache', 'screenshots')
const IDLE = 'name: idle\nversion: "1"\ndriver: process\ncommand: "sleep 600"\nresources: { cpu: 0.1, memory: 16 }\n'
const TICKER = 'name: ticker\nversion: "1"\ndriver: process\ncommand: "i=0; while :; do i=$((i+1)); echo tick $i; sleep 1; done"\nresources: { cpu: 0.1, memory: 16 }\n'
const SITE = 'name: site\ncomponents:\n  front:\n    template: idle\n  back:\n    after: [front]\n    components:\n      db:\n        template: idle\n      cache:\n        template: idle\n        after: [db]\n'

/** The dashboard at /ui in a real browser (headless Chromium), with a real VM in it, checked against the API. */
describe('dashboard', { skip: skipWithoutQemu }, () => {
  const hosts: TestHost[] = []
  let a: TestHost, b: TestHost
  let alicePem: string
  let alice: string
  let browser: Browser
  let page: Page
  let vm: any
  /** Every request the page made: URL, headers and body. */
  const sent: string[] = []
  /** What went wrong in the page: its uncaught errors. */
  const pageErrors: string[] = []

  const shot = async (name: string): Promise<void> => { await page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`), fullPage: true }) }

  before(async () => {
    const dir = await tempDir('dashboard')
    await mkdir(SHOTS, { recursive: true })
    alicePem = join(dir, 'alice.pem')
    alice = (await loadOrCreateUserKey(alicePem)).key.id
    a = await startHost({ name: 'ui-a', extraArgs: ['--cpu', '4', '--memory', '1024', '--bank', '--bank-grant', '100000'] })
    const bank = (await getJson<{ bank: string }>(a, '/v1/bank')).bank
    b = await startHost({ name: 'ui-b', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '1024', '--accept-bank', bank] })
    hosts.push(a, b)
    await writeFile(join(dir, 'idle.yaml'), IDLE)
    await cli(a, alicePem, ['template', 'import', join(dir, 'idle.yaml')])
    await writeFile(join(dir, 'ticker.yaml'), TICKER)
    await cli(a, alicePem, ['template', 'import', join(dir, 'ticker.yaml')])
    await cli(b, alicePem, ['template', 'import', join(dir, 'idle.yaml')])
    await cli(a, alicePem, ['template', 'build', join(ROOT, 'examples/counter')])
    vm = (await cli(a, alicePem, ['deploy', 'counter', '--host', 'ui-a', '--name', 'counter', '--wait'])).instances[0]
    await eventually(async () => (await getJson(b, '/v1/bank')).host === a.info.peerId || undefined, 20_000, 'B to find the bank')
    // Alice's account opens with the bank's starting grant: her bid pays from it.
    await cli(a, alicePem, ['account'])
    await cli(b, alicePem, ['deploy', 'idle', '--host', 'ui-b', '--name', 'bidder', '--bid', '50', '--for', '300s'])
    await writeFile(join(dir, 'site.yaml'), SITE)
    await cli(a, alicePem, ['apply', join(dir, 'site.yaml')])
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
    page.on('pageerror', e => { pageErrors.push(e.message) })
    page.on('request', r => { sent.push(`${r.url()} ${JSON.stringify(r.headers())} ${r.postData() ?? ''}`) })
    await page.goto(`${a.api}/`)
    // The user's own key, imported into the browser, which keeps it.
    await page.setInputFiles('#import-key', alicePem)
    await page.waitForSelector(`#owner[title="${alice}"]`)
  })

  after(async () => {
    await browser?.close()
    for (const h of hosts) {
      const { instances } = await getJson(h, `/v1/instances?host=${h.info.peerId}`).catch(() => ({ instances: [] }))
      for (const i of instances) await cli(h, alicePem, ['instance', 'destroy', i.id]).catch(() => {})
    }
    await stopHosts(hosts)
    assert.deepEqual(pageErrors, [], 'the page ran without errors')
  })

  it('shows the hosts as the API does, and the market\'s prices, bids and balance', async () => {
    const peers = await getJson(a, '/v1/peers')
    for (const h of peers.hosts) {
      const row = page.locator(`#hosts tr[data-host="${h.id}"]`)
      assert.equal(await row.getAttribute('data-name'), h.name)
      assert.match(await row.innerText(), new RegExp(`${h.free.cpu} / ${h.capacity.cpu}`))
    }
    const price = await eventually(async () => (await getJson(a, '/v1/peers')).hosts.find((h: any) => h.id === b.info.peerId)?.price || undefined, 20_000, 'B to have a price')
    await eventually(async () => Number(await page.locator(`#market tr[data-market-host="${b.info.peerId}"]`).getAttribute('data-price')) > 0 || undefined, 10_000, 'the market to show B\'s price')
    assert.ok(Math.abs(Number(await page.locator(`#market tr[data-market-host="${b.info.peerId}"]`).getAttribute('data-price')) - price) <= price, 'B\'s price as its advert says')
    const bidder = (await cli(b, alicePem, ['instance', 'list'])).find((i: any) => i.name === 'bidder')
    await page.locator(`#market tr[data-bid="${bidder.id}"]`).waitFor({ timeout: 10_000 })
    const account = await cli(a, alicePem, ['account'])
    await eventually(async () => (await page.locator('#balance').innerText()).includes(String(account.balance)) || undefined, 10_000, 'the balance the bank holds')
    await shot('hosts-market')
  })

  it('bids from the page: the browser signs the payment and the bid, and the host\'s view shows it', async () => {
    const bidder = (await cli(b, alicePem, ['instance', 'list'])).find((i: any) => i.name === 'bidder')
    const card = page.locator(`[data-instance="${bidder.id}"]`)
    await card.locator('input.bid-credits').fill('20')
    await card.locator('input.bid-seconds').fill('600')
    await card.locator('button.bid').click()
    await card.locator('.action.done').waitFor({ timeout: 20_000 })
    const view = await cli(b, alicePem, ['instance', 'show', bidder.id])
    assert.equal(view.bid, 70, 'the 50 it had and the 20 paid from the page')
    assert.ok(view.bidUntil > Date.now() + 500_000, 'it lasts the 600 s asked for')
    await eventually(async () => (await page.locator(`#market tr[data-bid="${bidder.id}"]`).innerText()).includes('70') || undefined, 10_000, 'the market to show the new bid')
  })

  it('never sends the user\'s key: only signatures by it leave the browser', async () => {
    const pem = await readFile(alicePem, 'utf8')
    const secret = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '')
    const der = Buffer.from(secret, 'base64')
    // The private key is the last 32 bytes of its PKCS#8 form; look for it as base64, base64url and hex.
    const raw = der.subarray(der.length - 32)
    const forms = [secret, raw.toString('base64'), raw.toString('base64url'), raw.toString('hex')]
    assert.ok(sent.some(r => r.includes('x-xenos-auth')), 'the page did sign requests')
    for (const r of sent) for (const f of forms) assert.ok(!r.includes(f), `a request carried the key: ${r.slice(0, 120)}`)
  })

  it('shows a running VM with graphs of its CPU and memory, and of its network, that move', async () => {
    const card = page.locator(`[data-instance="${vm.id}"]`)
    await card.waitFor()
    assert.equal(await card.getAttribute('data-state'), 'running')
    assert.match(await card.locator('.host').innerText(), /ui-a/)
    const points = async (): Promise<number> => Number(await card.locator('.chart.usage').getAttribute('data-points'))
    await eventually(async () => await points() >= 3 || undefined, 20_000, 'the graph to have points')
    const first = await points()
    await eventually(async () => await points() >= first + 2 || undefined, 10_000, 'the graph to move on')
    // Traffic to the VM's service shows in the network graph, each way.
    const network = card.locator('.chart.network')
    await eventually(async () => {
      await fetch(`${vm.endpoints[0].url}/count`).then(async r => await r.text())
      const [rx = 0, tx = 0] = (await network.getAttribute('data-last') ?? '').split(' ').map(Number)
      return (rx > 0 && tx > 0) || undefined
    }, 20_000, 'the network graph to show the traffic')
    assert.equal(await card.locator('canvas').count(), 2, 'both drawn by uPlot')
    await shot('instance-graph')
  })

  it('follows an instance\'s log while its panel is open, as `xenos instance logs -f` does', async () => {
    const ticker = (await cli(a, alicePem, ['deploy', 'ticker', '--host', 'ui-a', '--name', 'ticker', '--wait'])).instances[0]
    const card = page.locator(`[data-instance="${ticker.id}"]`)
    await card.waitFor({ timeout: 20_000 })
    await card.locator('details.logs summary').click()
    const pre = card.locator('details.logs pre')
    const latest = async (): Promise<number> => Number(/tick (\d+)\s*$/.exec(await pre.innerText())?.[1] ?? 0)
    const first = await eventually(async () => await latest() || undefined, 10_000, 'the log to show')
    await eventually(async () => await latest() >= first + 2 || undefined, 10_000, 'the lines printed since to follow')
    // The page's log is the instance's: what the CLI reads of it is there, line for line.
    const shown = await pre.innerText()
    const read = (await cli(a, alicePem, ['instance', 'logs', ticker.id, '--lines', '200'])).text as string
    const ticks = (text: string): string[] => text.split('\n').filter(l => /^tick \d+$/.test(l))
    assert.deepEqual(ticks(shown), ticks(read).slice(0, ticks(shown).length), 'the same lines, in order')
    await shot('logs')
    await cli(a, alicePem, ['instance', 'destroy', ticker.id])
    await card.waitFor({ state: 'detached', timeout: 10_000 })
  })

  it('shows a deployment as a tree of its components, with the states the API gives', async () => {
    const shown = await cli(a, alicePem, ['deployment', 'show', 'site'])
    const tree = page.locator('[data-deployment="site"]')
    await tree.waitFor()
    for (const c of shown.components) {
      await eventually(async () => await tree.locator(`li[data-component="${c.path}"]`).getAttribute('data-state') === c.state || undefined, 10_000, `${c.path} shown ${c.state}`)
    }
    assert.equal(await tree.locator('li[data-component="back"] li[data-component="back.cache"]').count(), 1, 'cache under back')
    await shot('deployment')
  })

  it('shows a deploy while it runs, host by host, with its phase', async () => {
    const deploying = cli(a, alicePem, ['deploy', 'counter', '--host', 'ui-b', '--name', 'second', '--wait'])
    const row = page.locator(`#deploys tr[data-host="${b.info.peerId}"]`)
    await row.waitFor({ timeout: 60_000 })
    assert.ok(['waiting', 'fetching', 'staging', 'creating', 'booting', 'checking', 'done'].includes(await row.getAttribute('data-phase') ?? ''), `a phase of a deploy under way: ${await row.getAttribute('data-phase')}`)
    assert.match(await row.innerText(), /second/)
    await shot('deploy')
    const second = (await deploying).instances[0]
    await page.locator(`[data-instance="${second.id}"][data-state="running"]`).waitFor({ timeout: 20_000 })
    await eventually(async () => await row.count() === 0 || undefined, 10_000, 'the deploy to be no longer in progress')
  })

  it('deploys from the page: the browser signs the deploy\'s part, and the host makes the instances it names', async () => {
    const row = page.locator(`#templates tr[data-template-host="${b.info.peerId}"]`).filter({ hasText: 'idle' })
    // A name the host refuses: its error is shown where the deploy was asked.
    await row.locator('input.deploy-name').fill('Not A Name!')
    await row.locator('button.deploy').click()
    assert.match(await row.locator('.action.failed').innerText({ timeout: 10_000 }), /INVALID_ARGUMENT/)
    await row.locator('input.deploy-name').fill('paged')
    await row.locator('input.deploy-count').fill('2')
    await row.locator('button.deploy').click()
    await row.locator('.action.done').waitFor({ timeout: 60_000 })
    const made = (await cli(b, alicePem, ['instance', 'list'])).filter((i: any) => i.name.startsWith('paged'))
    assert.deepEqual(made.map((i: any) => i.name).sort(), ['paged-1', 'paged-2'])
    for (const i of made) {
      assert.equal(i.host, b.info.peerId)
      assert.equal(i.owner, alice, 'made for the key the browser holds')
      await page.locator(`[data-instance="${i.id}"][data-state="running"]`).waitFor({ timeout: 20_000 })
    }
    await shot('deployed-from-page')
    for (const i of made) await cli(b, alicePem, ['instance', 'destroy', i.id])
  })

  it('migrates the VM at the user\'s signed word, showing the move while it runs, then the VM on its new host', async () => {
    const card = page.locator(`[data-instance="${vm.id}"]`)
    await card.locator('select.migrate-to').selectOption(b.info.peerId)
    await card.locator('button.migrate').click()
    const row = page.locator(`#migrations tr[data-migration="${vm.id}"]`)
    await row.waitFor({ timeout: 60_000 }).catch(async (err: unknown) => { throw new Error(`${String(err)}; the card says: ${await card.innerText()}`) })
    assert.ok(['preparing', 'copying', 'switching'].includes(await row.getAttribute('data-phase') ?? ''), 'a phase of a move under way')
    await shot('migration')
    await eventually(async () => (await card.locator('.host').innerText()).includes('ui-b') || undefined, 120_000, 'the VM to run on B')
    assert.equal((await cli(b, alicePem, ['instance', 'show', vm.id])).host, b.info.peerId)
    assert.equal(await row.count(), 0, 'no longer in progress')
    await shot('migrated')
  })
})
