// The dashboard: what the overlay holds and what the user runs on it, read from the API every
// two seconds; actions signed with the key this browser keeps.
import { html, render, useEffect, useRef, useState } from './vendor/preact-htm.js'
import uPlot from './vendor/uplot.js'
import { events, get, send, signed } from './api.js'
import { forgetKey, generateKey, importPem, loadKey } from './keys.js'
import { deployParts, nonce, signOrder } from './sign.js'

const EVERY_MS = 2000
/** Points kept per instance chart: two minutes. */
const HISTORY = 60
const MIB = 1024 * 1024

const short = id => id.length > 16 ? `…${id.slice(-8)}` : id
const mib = bytes => `${Math.round(bytes / MIB)} MiB`
/** A price (credits per second per CPU) to three significant digits. */
const price = p => p === undefined || p === 0 ? '0' : Number(p.toPrecision(3)).toString()
const ago = ms => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}
const settled = async promise => { try { return await promise } catch (err) { return { failed: err.message } } }

/** One reading of everything the dashboard shows; signed reads only with a key. */
async function readAll (key, history) {
  const [self, peers, templates, names, bank] = await Promise.all([
    get('/v1/host'), get('/v1/peers'), get('/v1/search?kind=template&limit=200'), get('/v1/names'), settled(get('/v1/bank')),
  ])
  const hosts = peers.hosts
  const state = { self, peers, hosts, templates: templates.results, names: names.names, bank: bank.failed === undefined ? bank : undefined, instances: [], deploys: [], migrations: [], deployments: [], account: undefined, files: [], tasks: [] }
  if (key === undefined) return state
  const sign = (method, path, o) => signed(key, method, path, o)
  // What adverts show of them, then what each one's host shows its owner (its bid, its health).
  const advertised = (await get(`/v1/instances?owner=${encodeURIComponent(key.id)}`)).instances
  state.instances = await Promise.all(advertised.map(async i => {
    if (i.unreachableSince !== undefined) return i
    const own = await settled(sign('GET', `/v1/instances/${i.id}`, { action: 'get', target: i.id, host: i.host }))
    return own.failed === undefined ? own : i
  }))
  const live = state.instances.filter(i => i.state === 'running' || i.state === 'paused')
  const [metrics, migrations, deploys, deployments, account, files, tasks] = await Promise.all([
    Promise.all(live.map(i => settled(sign('GET', `/v1/instances/${i.id}/metrics`, { action: 'metrics', target: i.id, host: i.host })))),
    Promise.all(hosts.map(h => settled(sign('GET', '/v1/migrations', { action: 'migrations', target: h.id, host: h.id })))),
    Promise.all(hosts.map(h => settled(sign('GET', '/v1/deploys', { action: 'deploys', target: h.id, host: h.id })))),
    Promise.all(hosts.map(h => settled(sign('GET', '/v1/deployments', { action: 'deployments', target: h.id, host: h.id })))),
    state.bank === undefined ? undefined : settled(sign('GET', '/v1/bank/account', { action: 'account', target: state.bank.bank, host: state.bank.host })),
    settled(sign('GET', `/v1/data/files?uri=${encodeURIComponent(`data://${key.id}/`)}`, { action: 'data.list', target: `data://${key.id}/`, host: self.id })),
    settled(sign('GET', '/v1/tasks', { action: 'task.list', target: 'tasks', host: self.id })),
  ])
  for (const m of metrics) if (m.failed === undefined) remember(history, m)
  state.deploys = deploys.flatMap(r => r.deploys ?? [])
  state.migrations = migrations.flatMap((r, i) => (r.migrations ?? []).map(m => ({ ...m, from: hosts[i].id })))
  // A deployment is held by several hosts; the one acting for it now says how it stands.
  state.deployments = deployments.flatMap((r, i) => (r.deployments ?? []).filter(d => d.supervisor === hosts[i].id))
  state.account = account?.failed === undefined ? account : undefined
  state.files = files.files ?? []
  state.tasks = tasks.tasks ?? []
  return state
}

/**
 * Adds a metrics reading to an instance's history: CPU as the share of a core used since the last
 * one, network as KiB/s each way (only where the instance's driver counts it).
 */
function remember (history, m) {
  const h = history.get(m.id) ?? { t: [], cpu: [], memory: [], rx: [], tx: [], network: false, last: undefined }
  const t = m.sampledAt / 1000
  const rate = (now, then, dt) => now === undefined || then === undefined ? null : Math.max(0, (now - then) / 1024 / dt)
  if (h.last !== undefined && t > h.last.t) {
    const dt = t - h.last.t
    h.t.push(t)
    h.cpu.push(Math.max(0, 100 * (m.cpuSeconds - h.last.cpuSeconds) / dt))
    h.memory.push(m.memoryBytes / MIB)
    h.rx.push(rate(m.netRxBytes, h.last.netRxBytes, dt))
    h.tx.push(rate(m.netTxBytes, h.last.netTxBytes, dt))
    for (const series of [h.t, h.cpu, h.memory, h.rx, h.tx]) if (series.length > HISTORY) series.shift()
  }
  h.network ||= m.netRxBytes !== undefined
  h.last = { t, cpuSeconds: m.cpuSeconds, netRxBytes: m.netRxBytes, netTxBytes: m.netTxBytes }
  history.set(m.id, h)
}

function App () {
  const [key, setKey] = useState()
  const [view, setView] = useState()
  const [error, setError] = useState()
  const [actions, setActions] = useState({})
  const history = useRef(new Map()).current
  /** Reads everything again now (set by the polling effect): an action's progress shows at once in the other views too. */
  const refresh = useRef(() => {})

  useEffect(() => { loadKey().then(setKey, err => setError(`the browser's key store: ${err.message}`)) }, [])
  useEffect(() => {
    let stopped = false
    const tick = async () => {
      try {
        const v = await readAll(key, history)
        if (!stopped) { setView(v); setError(undefined) }
      } catch (err) {
        if (!stopped) setError(err.message)
      }
    }
    refresh.current = tick
    void tick()
    const timer = setInterval(tick, EVERY_MS)
    return () => { stopped = true; clearInterval(timer) }
  }, [key])

  /** Runs a signed action, showing how it goes under `label` until it ends. */
  const act = async (label, run) => {
    setActions(a => ({ ...a, [label]: { state: 'running' } }))
    try {
      let last = 0
      await run(progress => {
        setActions(a => ({ ...a, [label]: { state: 'running', progress } }))
        if (Date.now() - last > EVERY_MS / 4) { last = Date.now(); void refresh.current() }
      })
      setActions(a => ({ ...a, [label]: { state: 'done' } }))
    } catch (err) {
      setActions(a => ({ ...a, [label]: { state: 'failed', message: err.message } }))
    }
  }

  if (view === undefined) return html`<p class="loading">${error ?? 'Reading the host…'}</p>`
  const names = new Map(view.hosts.map(h => [h.id, h.name]))
  const hostName = id => names.get(id) ?? short(id)
  return html`
    <header>
      <h1>Xenos</h1>
      <span class="self">on <b>${view.self.name}</b> <code title=${view.self.id}>${short(view.self.id)}</code> · ${view.self.version}</span>
      <${KeyPanel} keyInfo=${key} setKey=${setKey} />
    </header>
    ${error === undefined ? null : html`<p class="error" role="alert">${error}</p>`}
    <main>
      <${Hosts} view=${view} keyInfo=${key} act=${act} actions=${actions} />
      <${Instances} view=${view} keyInfo=${key} history=${history} hostName=${hostName} act=${act} actions=${actions} />
      <${Deploys} deploys=${view.deploys} templates=${view.templates} hostName=${hostName} />
      <${Migrations} migrations=${view.migrations} hostName=${hostName} />
      <${Deployments} deployments=${view.deployments} hostName=${hostName} />
      <${Market} view=${view} hostName=${hostName} />
      <${Templates} templates=${view.templates} names=${view.names} hostName=${hostName} keyInfo=${key} act=${act} actions=${actions} />
      <${Data} files=${view.files} tasks=${view.tasks} hostName=${hostName} signedIn=${key !== undefined} />
    </main>`
}

function KeyPanel ({ keyInfo, setKey }) {
  const file = useRef()
  const onFile = async e => {
    const text = await e.target.files[0]?.text()
    if (text !== undefined) setKey(await importPem(text))
  }
  if (keyInfo !== undefined) {
    return html`<span class="key">key <code id="owner" title=${keyInfo.id}>${short(keyInfo.id)}</code>
      <button onClick=${async () => { await forgetKey(); setKey(undefined) }}>Forget</button></span>`
  }
  return html`<span class="key">
    <button id="generate-key" onClick=${async () => setKey(await generateKey())}>New key</button>
    <button onClick=${() => file.current.click()}>Import key…</button>
    <input type="file" id="import-key" ref=${file} accept=".pem" hidden onChange=${onFile} />
    <small>kept in this browser, never sent</small></span>`
}

function Bar ({ value, max, label }) {
  const share = max > 0 ? Math.max(0, Math.min(1, value / max)) : 0
  return html`<span class="bar" title=${label}><span style=${`width:${(share * 100).toFixed(1)}%`}></span><em>${label}</em></span>`
}

function Hosts ({ view, keyInfo, act, actions }) {
  const connected = new Set(view.peers.connected.map(p => p.id))
  const operates = h => keyInfo !== undefined && h.operators.includes(keyInfo.id)
  const drain = h => act(`drain ${h.id}`, async progress => {
    const res = await signed(keyInfo, 'POST', '/v1/host/drain', { action: 'drain', target: h.id, params: { to: null }, host: h.id, body: {}, accept: 'text/event-stream' })
    for await (const e of events(res)) {
      if (e.event === 'progress') progress(`${short(e.data.instance)}: ${e.data.migration.phase}`)
      if (e.event === 'error') throw new Error(`${e.data.error.code}: ${e.data.error.message}`)
    }
  })
  return html`<section id="hosts"><h2>Hosts <small>${view.hosts.length} on the overlay</small></h2>
    <table><thead><tr><th>Name</th><th>Free CPU</th><th>Free memory</th><th>Price</th><th>Instances</th><th>Link</th><th></th></tr></thead><tbody>
    ${view.hosts.map(h => html`<tr data-host=${h.id} data-name=${h.name}>
      <td><b>${h.name}</b> <code title=${h.id}>${short(h.id)}</code></td>
      <td><${Bar} value=${h.free.cpu} max=${h.capacity.cpu} label=${`${h.free.cpu} / ${h.capacity.cpu}`} /></td>
      <td><${Bar} value=${h.free.memory} max=${h.capacity.memory} label=${`${h.free.memory} / ${h.capacity.memory} MiB`} /></td>
      <td class="price">${price(h.price)}</td>
      <td>${h.instances}</td>
      <td>${h.id === view.self.id ? 'this host' : connected.has(h.id) ? 'connected' : 'via overlay'}</td>
      <td>${operates(h) ? html`<button onClick=${() => drain(h)}>Drain</button> <${ActionState} a=${actions[`drain ${h.id}`]} />` : null}</td>
    </tr>`)}
    ${view.peers.unreachable.map(u => html`<tr class="unreachable" data-host=${u.id}><td><b>${u.name}</b> <code>${short(u.id)}</code></td><td colspan="5">unreachable since ${ago(u.since)}</td><td></td></tr>`)}
    </tbody></table></section>`
}

function ActionState ({ a }) {
  if (a === undefined) return null
  return html`<span class=${`action ${a.state}`}>${a.state === 'failed' ? a.message : a.progress ?? a.state}</span>`
}

function Instances ({ view, keyInfo, history, hostName, act, actions }) {
  if (keyInfo === undefined) return html`<section id="instances"><h2>Your instances</h2><p>Make a key or import yours (~/.config/xenos/user.pem) to see your instances and act on them.</p></section>`
  return html`<section id="instances"><h2>Your instances <small>${view.instances.length}</small></h2>
    ${view.instances.length === 0 ? html`<p>None yet: <code>xenos deploy TEMPLATE</code>.</p>` : null}
    <div class="cards">${view.instances.map(i => html`<${InstanceCard} key=${i.id} i=${i} view=${view} keyInfo=${keyInfo} h=${history.get(i.id)} hostName=${hostName} act=${act} actions=${actions} />`)}</div>
  </section>`
}

function InstanceCard ({ i, view, keyInfo, h, hostName, act, actions }) {
  const [to, setTo] = useState('')
  const control = action => act(`${action} ${i.id}`, () => signed(keyInfo, 'POST', `/v1/instances/${i.id}/${action}`, { action, target: i.id, host: i.host }))
  const migrate = () => act(`migrate ${i.id}`, async progress => {
    const params = { to, copyDisk: false }
    const res = await signed(keyInfo, 'POST', `/v1/instances/${i.id}/migrate`, { action: 'migrate', target: i.id, params, host: i.host, body: { to }, accept: 'text/event-stream' })
    for await (const e of events(res)) {
      if (e.event === 'progress') progress(phaseText(e.data))
      if (e.event === 'error') throw new Error(`${e.data.error.code}: ${e.data.error.message}`)
    }
  })
  const [credits, setCredits] = useState('10')
  const [seconds, setSeconds] = useState('300')
  const host = view.hosts.find(x => x.id === i.host)
  // A bid pays credits from the user's account into the host's escrow (an order signed here), then hands the bank's receipt to the host.
  const bid = () => act(`bid ${i.id}`, async progress => {
    const amount = Number(credits)
    progress('paying')
    const order = await signOrder(keyInfo, 'transfer', { v: 1, bank: view.bank.bank, from: keyInfo.id, to: host.escrow, amount, nonce: nonce(), issuedAt: Date.now(), memo: `bid on ${i.id}` })
    const receipt = await send('POST', '/v1/bank/transfers', { body: order })
    const params = { receipt, seconds: Number(seconds) }
    progress('bidding')
    await signed(keyInfo, 'POST', `/v1/instances/${i.id}/bid`, { action: 'bid', target: i.id, params, host: i.host, body: params })
  })
  const health = i.services.map(s => html`<span class=${`health ${s.health}`} title=${s.url}>${s.name}: ${s.health}</span>`)
  const others = view.hosts.filter(x => x.id !== i.host)
  const running = i.state === 'running'
  const canBid = running && view.bank !== undefined && host?.escrow !== undefined
  return html`<article class="card" data-instance=${i.id} data-state=${i.state}>
    <h3>${i.name} <span class=${`state ${i.state}`}>${i.unreachableSince === undefined ? i.state : 'unknown'}</span></h3>
    <p class="meta"><code>${i.id}</code> on <b class="host">${hostName(i.host)}</b> · ${i.templateName} · ${i.resources.cpu} CPU, ${i.resources.memory} MiB</p>
    <p class="meta">${health}${i.bid === undefined ? null : html` <span class="bid">bid ${i.spent ?? 0}/${i.bid} credits, ${(i.rate ?? 0).toFixed(3)}/s, share ${((i.share ?? 0) * 100).toFixed(0)}%</span>`}</p>
    ${i.endpoints.map(e => html`<a class="endpoint" href=${e.url}>${e.name}</a> `)}
    <div class="charts"><${Chart} h=${h} of=${USAGE} />${h?.network === true ? html`<${Chart} h=${h} of=${NETWORK} />` : null}</div>
    <${Logs} i=${i} keyInfo=${keyInfo} />
    <div class="controls">
      ${running ? html`<button onClick=${() => control('pause')}>Pause</button> <button onClick=${() => control('stop')}>Stop</button>` : null}
      ${i.state === 'paused' ? html`<button onClick=${() => control('resume')}>Resume</button>` : null}
      ${i.state === 'stopped' || i.state === 'exited' || i.state === 'failed' ? html`<button onClick=${() => control('start')}>Start</button>` : null}
      <button class="danger" onClick=${() => window.confirm(`Destroy ${i.name}?`) && control('destroy')}>Destroy</button>
      ${running && others.length > 0
        ? html`<select class="migrate-to" value=${to} onChange=${e => setTo(e.target.value)}><option value="">move to…</option>${others.map(x => html`<option value=${x.id}>${x.name}</option>`)}</select>
          <button class="migrate" disabled=${to === ''} onClick=${migrate}>Migrate</button>`
        : null}
      ${canBid
        ? html`<span class="bid-form"><input class="bid-credits" type="number" min="1" value=${credits} onInput=${e => setCredits(e.target.value)} /> credits for
          <input class="bid-seconds" type="number" min="1" value=${seconds} onInput=${e => setSeconds(e.target.value)} /> s <button class="bid" onClick=${bid}>Bid</button></span>`
        : null}
      ${Object.entries(actions).filter(([label]) => label.endsWith(i.id)).map(([label, a]) => html`<span class="doing">${label.split(' ')[0]}: <${ActionState} a=${a} /></span>`)}
    </div>
  </article>`
}

/** Most of an instance's log the page keeps: the end of it, as a terminal's scrollback would. */
const LOG_KEPT = 200_000

/** What an instance prints, followed while the panel is open: its last lines, then what comes, from its host now. */
function Logs ({ i, keyInfo }) {
  const [open, setOpen] = useState(false)
  const [text, setText] = useState('')
  const [failed, setFailed] = useState()
  const pre = useRef()
  useEffect(() => {
    if (!open) return
    let next
    let stopped = false
    let reading = false
    const read = async () => {
      // A read still under way when the next is due: the next would read the same bytes again.
      if (reading) return
      reading = true
      const query = next === undefined ? 'lines=100' : `lines=1&from=${next}`
      try {
        const piece = await signed(keyInfo, 'GET', `/v1/instances/${i.id}/logs?${query}`, { action: 'logs', target: i.id, host: i.host })
        if (stopped) return
        const first = next === undefined
        next = piece.next
        setFailed(undefined)
        // The last lines come without the newline they end in; what follows starts after it.
        if (first) setText(piece.text === '' ? '' : `${piece.text}\n`.slice(-LOG_KEPT))
        else if (piece.text !== '') setText(t => (t + piece.text).slice(-LOG_KEPT))
      } catch (err) {
        if (!stopped) setFailed(err.message)
      } finally {
        reading = false
      }
    }
    void read()
    const timer = setInterval(read, EVERY_MS)
    return () => { stopped = true; clearInterval(timer) }
  }, [open, i.host])
  useEffect(() => { if (pre.current != null) pre.current.scrollTop = pre.current.scrollHeight }, [text])
  return html`<details class="logs" onToggle=${e => setOpen(e.target.open)}>
    <summary>Logs</summary>
    ${failed === undefined ? null : html`<p class="error">${failed}</p>`}
    ${open ? html`<pre ref=${pre}>${text}</pre>` : null}
  </details>`
}

function phaseText (s) {
  const total = s.disk?.totalBytes ?? s.totalBytes
  const done = s.disk?.copiedBytes ?? s.transferredBytes
  return total ? `${s.phase} ${mib(done ?? 0)} of ${mib(total)}` : s.phase
}

/** The time axis: the last minute at least, up to the latest point (uPlot alone would give one point a thousand days, and a few seconds milliseconds). */
const TIME = {
  time: true,
  range: u => {
    const t = u.data[0]
    const last = t.at(-1) ?? Date.now() / 1000
    return [Math.min(t[0] ?? last, last - 60), last]
  },
}
const USAGE = {
  kind: 'usage',
  series: [{}, { label: 'CPU %', stroke: '#2a6fdb', width: 2, scale: '%' }, { label: 'memory MiB', stroke: '#d9822b', width: 2, scale: 'MiB' }],
  axes: [{}, { scale: '%', size: 40 }, { scale: 'MiB', side: 1, size: 50, grid: { show: false } }],
  scales: { x: TIME, '%': { range: (_u, _min, max) => [0, Math.max(10, max)] } },
  data: h => [h?.t ?? [], h?.cpu ?? [], h?.memory ?? []],
}
const NETWORK = {
  kind: 'network',
  series: [{}, { label: 'in KiB/s', stroke: '#2f9e44', width: 2 }, { label: 'out KiB/s', stroke: '#9c36b5', width: 2 }],
  axes: [{}, { size: 50 }],
  scales: { x: TIME, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
  data: h => [h?.t ?? [], h?.rx ?? [], h?.tx ?? []],
}

/** An instance's use over the last two minutes, drawn by uPlot: CPU and memory (USAGE), or its network (NETWORK). */
function Chart ({ h, of }) {
  const box = useRef()
  const plot = useRef()
  const data = of.data(h)
  useEffect(() => {
    plot.current = new uPlot({ width: 360, height: 140, series: of.series, axes: of.axes, scales: of.scales, legend: { live: false } }, data, box.current)
    return () => plot.current.destroy()
  }, [])
  useEffect(() => { plot.current?.setData(data) })
  return html`<div class=${`chart ${of.kind}`} ref=${box} data-points=${data[0].length} data-last=${data.slice(1).map(s => s.at(-1) ?? '').join(' ')}></div>`
}

function Migrations ({ migrations, hostName }) {
  return html`<section id="migrations"><h2>Migrations in progress <small>${migrations.length}</small></h2>
    ${migrations.length === 0 ? html`<p>None now.</p>` : html`<table><thead><tr><th>Instance</th><th>From</th><th>To</th><th>Phase</th><th>Progress</th><th>Since</th></tr></thead><tbody>
      ${migrations.map(m => {
        const total = m.status.disk?.totalBytes ?? m.status.totalBytes ?? 0
        const done = m.status.disk?.copiedBytes ?? m.status.transferredBytes ?? 0
        return html`<tr data-migration=${m.id} data-phase=${m.status.phase}><td>${m.name} <code>${short(m.id)}</code></td><td>${hostName(m.from)}</td><td>${hostName(m.to)}</td>
          <td class="phase">${m.status.phase}</td><td><${Bar} value=${done} max=${total} label=${total > 0 ? `${mib(done)} / ${mib(total)}` : ''} /></td><td>${ago(m.startedAt)}</td></tr>`
      })}</tbody></table>`}
  </section>`
}

function Deploys ({ deploys, templates, hostName }) {
  const templateName = id => templates.find(t => t.id === id)?.body.name ?? id.slice(7, 19)
  return html`<section id="deploys"><h2>Deploys in progress <small>${deploys.length}</small></h2>
    ${deploys.length === 0 ? html`<p>None now.</p>` : html`<table><thead><tr><th>Deploy</th><th>Host</th><th>Phase</th><th>Fetched</th><th>Since</th></tr></thead><tbody>
      ${deploys.flatMap(d => d.hosts.map(p => html`<tr data-deploy=${d.key} data-host=${p.host} data-phase=${p.phase}>
        <td>${d.name ?? templateName(d.template)} <small>${templateName(d.template)}</small></td><td>${hostName(p.host)}</td>
        <td class="phase">${p.phase}${p.error === null ? '' : `: ${p.error.message}`}</td>
        <td>${p.fetching === null ? '' : html`<${Bar} value=${p.fetching.held} max=${p.fetching.size} label=${`${mib(p.fetching.held)} / ${mib(p.fetching.size)}`} />`}</td>
        <td>${ago(d.startedAt)}</td></tr>`))}
    </tbody></table>`}
  </section>`
}

/** A deployment's components as a tree of their paths (a.b.c), each with its state and instances. */
function Deployments ({ deployments, hostName }) {
  return html`<section id="deployments"><h2>Deployments <small>${deployments.length}</small></h2>
    ${deployments.length === 0 ? html`<p>None: <code>xenos apply FILE</code> runs a description.</p>` : null}
    ${deployments.map(d => html`<div class="deployment" data-deployment=${d.name} data-state=${d.state}>
      <h3>${d.name} <span class=${`state ${d.state}`}>${d.state}</span> <small>supervised by ${hostName(d.supervisor)}</small></h3>
      ${d.error === null ? null : html`<p class="error">${d.error}</p>`}
      <${Tree} nodes=${treeOf(d.components)} hostName=${hostName} />
    </div>`)}
  </section>`
}

function treeOf (components) {
  const root = { children: new Map() }
  for (const c of components) {
    let node = root
    for (const part of c.path.split('.')) {
      if (!node.children.has(part)) node.children.set(part, { name: part, children: new Map() })
      node = node.children.get(part)
    }
    node.component = c
  }
  return [...root.children.values()]
}

function Tree ({ nodes, hostName }) {
  return html`<ul class="tree">${nodes.map(n => html`<li data-component=${n.component?.path ?? n.name} data-state=${n.component?.state ?? ''}>
    <b>${n.name}</b> ${n.component === undefined ? null : html`<span class=${`state ${n.component.state}`}>${n.component.state}</span>
      ${n.component.instances.map(i => html` <code title=${i.id}>${short(i.id)}</code>@${hostName(i.host)}`)}
      ${n.component.event === null ? null : html` <small>${n.component.event}</small>`}`}
    ${n.children.size > 0 ? html`<${Tree} nodes=${[...n.children.values()]} hostName=${hostName} />` : null}
  </li>`)}</ul>`
}

function Market ({ view, hostName }) {
  const max = Math.max(0, ...view.hosts.map(h => h.price ?? 0))
  const bids = view.instances.filter(i => i.bid !== undefined)
  return html`<section id="market"><h2>Market</h2>
    <table><thead><tr><th>Host</th><th>Price (credits/s per CPU)</th></tr></thead><tbody>
      ${[...view.hosts].sort((a, b) => (a.price ?? 0) - (b.price ?? 0)).map(h => html`<tr data-market-host=${h.id} data-price=${h.price ?? 0}><td>${h.name}</td><td><${Bar} value=${h.price ?? 0} max=${max} label=${price(h.price)} /></td></tr>`)}
    </tbody></table>
    ${view.account === undefined ? null : html`<p id="balance">Balance <b>${view.account.balance}</b> credits at the bank on ${hostName(view.bank.host)}; spent on instances: ${view.account.instances.reduce((n, s) => n + s.paid - s.back, 0)}</p>`}
    ${bids.length === 0 ? null : html`<table><thead><tr><th>Your bid</th><th>Paid</th><th>Spent</th><th>Rate</th><th>Share</th><th>Until</th></tr></thead><tbody>
      ${bids.map(i => html`<tr data-bid=${i.id}><td>${i.name} on ${hostName(i.host)}</td><td>${i.bid}</td><td>${i.spent ?? 0}</td><td>${(i.rate ?? 0).toFixed(3)}/s</td><td>${((i.share ?? 0) * 100).toFixed(0)}%</td><td>${i.bidUntil === undefined ? '' : new Date(i.bidUntil).toLocaleTimeString()}</td></tr>`)}
    </tbody></table>`}
  </section>`
}

function Templates ({ templates, names, hostName, keyInfo, act, actions }) {
  return html`<section id="templates"><h2>Templates <small>${templates.length}</small></h2>
    <table><thead><tr><th>Name</th><th>Version</th><th>Driver</th><th>Id</th><th>Host</th>${keyInfo === undefined ? null : html`<th>Deploy</th>`}</tr></thead><tbody>
      ${templates.map(t => html`<tr data-template=${t.id} data-template-host=${t.host}><td>${t.body.name}</td><td>${t.body.version}</td><td>${t.body.driver}</td><td><code title=${t.id}>${t.id.slice(7, 19)}</code></td><td>${hostName(t.host)}</td>
        ${keyInfo === undefined ? null : html`<td><${DeployForm} t=${t} keyInfo=${keyInfo} act=${act} actions=${actions} /></td>`}</tr>`)}
    </tbody></table>
    ${names.length === 0 ? null : html`<h3>Names</h3><ul class="names">${names.map(n => html`<li><code>template://${short(n.owner)}/${n.name}/${n.tag}</code> → <code>${n.template.slice(7, 19)}</code></li>`)}</ul>`}
  </section>`
}

/** Deploys `count` instances of template `t` on the host that holds it, named as asked (NAME-1, NAME-2… for several). */
function DeployForm ({ t, keyInfo, act, actions }) {
  const [name, setName] = useState('')
  const [count, setCount] = useState('1')
  const label = `deploy ${t.id}@${t.host}`
  const deploy = () => act(label, async progress => {
    const spec = { name: name.trim() === '' ? null : name.trim() }
    const n = Number(count)
    if (!Number.isInteger(n) || n < 1 || n > 100) throw new Error('INVALID_ARGUMENT: from 1 to 100 instances')
    const parts = await deployParts(keyInfo, { template: t.id, spec, host: t.host, count: n, requestId: nonce() })
    const res = await send('POST', '/v1/instances', { body: { template: t.id, spec, parts }, accept: 'text/event-stream' })
    for await (const e of events(res)) {
      if (e.event === 'progress') progress(e.data.hosts.map(h => h.phase).join(', '))
      if (e.event === 'error') throw new Error(`${e.data.error.code}: ${e.data.error.message}`)
      if (e.event === 'result' && e.data.failures.length > 0) throw new Error(e.data.failures.map(f => `${f.code}: ${f.message}`).join('; '))
    }
  })
  return html`<span class="deploy-form"><input class="deploy-name" placeholder="name" size="10" value=${name} onInput=${e => setName(e.target.value)} />
    × <input class="deploy-count" type="number" min="1" max="100" value=${count} onInput=${e => setCount(e.target.value)} />
    <button class="deploy" onClick=${deploy}>Deploy</button>
    ${actions[label] === undefined ? null : html` <${ActionState} a=${actions[label]} />`}</span>`
}

function Data ({ files, tasks, hostName, signedIn }) {
  if (!signedIn) return null
  return html`<section id="data"><h2>Data and tasks</h2>
    <table><thead><tr><th>File</th><th>Size</th><th>Updated</th></tr></thead><tbody>
      ${files.map(f => html`<tr data-file=${f.uri}><td><code>${f.uri}</code></td><td>${f.size} B</td><td>${ago(f.updatedAt)}</td></tr>`)}
    </tbody></table>
    ${tasks.length === 0 ? null : html`<table><thead><tr><th>Task</th><th>State</th><th>Host</th><th>Outputs</th></tr></thead><tbody>
      ${tasks.map(t => html`<tr data-task=${t.id}><td><code>${t.id}</code></td><td class=${`state ${t.state}`}>${t.state}</td><td>${hostName(t.host)}</td><td><code>${t.outputs}</code></td></tr>`)}
    </tbody></table>`}
  </section>`
}

render(html`<${App} />`, document.getElementById('app'))
