'use strict'
// kafkajs interop scenarios against a running kelp. Contract: tests/interop/README.md.
// Usage: node interop.js [scenario...]   (env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX)
// Prints one `RESULT|kafkajs|<scenario>|<status>|<detail>` line per scenario; exit 1 if any failed.

const {
  Kafka,
  AssignerProtocol,
  CompressionTypes,
  CompressionCodecs,
  ConfigResourceTypes,
  Partitioners,
  logLevel,
} = require('kafkajs')

const CLIENT = 'kafkajs'
const PARTITIONS = 3
const RT_RECORDS = 600 // 200 per partition
const SENDS = 4 // the records go out in this many send() calls: several batches per partition
const CONSUME_DEADLINE_MS = 60000

const bootstrap = process.env.KELP_BOOTSTRAP
const prefix = process.env.KELP_TOPIC_PREFIX || `interop-${Date.now()}-`

// ------------------------------------------------------------------ codecs

// kafkajs has only gzip built in; the others come from community codec packages, used when they
// installed (see package.json). A codec whose package is absent is a `skip` with the reason.
const codecs = {
  none: { type: CompressionTypes.None },
  gzip: { type: CompressionTypes.GZIP },
  // Each package has its own export shape; `load` turns it into a kafkajs codec factory.
  snappy: { type: CompressionTypes.Snappy, pkg: 'kafkajs-snappy', load: m => m },
  lz4: { type: CompressionTypes.LZ4, pkg: 'kafkajs-lz4', load: M => new M().codec },
  zstd: {
    type: CompressionTypes.ZSTD,
    pkg: '@kafkajs/zstd',
    load: m => m(),
    // No zstd codec for kafkajs builds on Node 20: this is what the client cannot do.
    notApplicable: true,
    why:
      '@kafkajs/zstd 0.1.1 does not install: its native dependency cppzst 2.0.6 fails to compile ' +
      'against Node 20 headers (they need C++17); kafkajs has no built-in zstd',
  },
}
for (const [name, c] of Object.entries(codecs)) {
  if (!c.pkg) continue
  try {
    const codec = c.load(require(c.pkg))
    if (typeof codec !== 'function') throw new Error(`${c.pkg} did not yield a codec factory`)
    CompressionCodecs[c.type] = codec
    c.available = true
  } catch (e) {
    c.available = false
    c.why = c.why || `codec package ${c.pkg} not installed (${e.code || e.message}); kafkajs has no built-in ${name}`
  }
}

// ------------------------------------------------------------------ harness

let anyFail = false
let step = ''
const recentLogs = [] // last kafkajs WARN/ERROR lines, for failure details

function result(scenario, status, detail) {
  if (status === 'fail') anyFail = true
  let d = String(detail === undefined ? '' : detail).replace(/[\r\n]+/g, ' ').replace(/\|/g, '/')
  if (d.length > 900) d = d.slice(0, 900) + '...'
  process.stdout.write(`RESULT|${CLIENT}|${scenario}|${status}|${d}\n`)
}

class CheckFailed extends Error {}

function check(cond, msg) {
  if (!cond) throw new CheckFailed(`at step '${step}': ${msg}`)
}

function describe(e) {
  if (!e) return String(e)
  const parts = []
  let cur = e
  for (let i = 0; cur && i < 5; i++) {
    let s = `${cur.name || 'Error'}: ${cur.message}`
    if (cur.type && !String(cur.message).includes(cur.type)) s += ` [${cur.type}]`
    // "API not supported" errors do not say which request: the stack does (Broker.joinGroup, ...).
    const calls = [...String(cur.stack || '').matchAll(/at Broker\.(\w+) /g)].map(x => x[1])
    const call = calls.find(c => c !== 'lookupRequest')
    if (call && cur.name === 'KafkaJSServerDoesNotSupportApiKey') s += ` (request: Broker.${call})`
    parts.push(s)
    cur = cur.cause || cur.originalError || (cur.errors && cur.errors[0])
  }
  return parts.join(' <- caused by ')
}

const levelName = Object.fromEntries(Object.entries(logLevel).map(([k, v]) => [v, k]))
const logCreator = () => ({ namespace, level, log }) => {
  const { message, timestamp, logger, ...extra } = log
  const line = `${timestamp} ${levelName[level] || level} [${namespace}] ${message} ${JSON.stringify(extra)}`
  // Kept for failure details without the stack (stderr gets the whole line).
  const { stack, ...brief } = extra
  recentLogs.push(`${levelName[level] || level} [${namespace}] ${message} ${JSON.stringify(brief)}`)
  if (recentLogs.length > 30) recentLogs.shift()
  process.stderr.write(line + '\n')
}

function kafka(suffix) {
  return new Kafka({
    clientId: `kelp-interop-kafkajs-${suffix}`,
    brokers: [bootstrap],
    connectionTimeout: 5000,
    requestTimeout: 15000,
    logLevel: logLevel.WARN,
    logCreator,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
  })
}

function withTimeout(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new CheckFailed(`${what} did not finish within ${ms / 1000}s; last step: ${step}`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

async function run(scenario, timeoutMs, body) {
  step = 'start'
  recentLogs.length = 0
  const t0 = Date.now()
  try {
    const detail = await withTimeout(body(), timeoutMs, 'scenario')
    result(scenario, 'pass', `${detail} (${((Date.now() - t0) / 1000).toFixed(1)}s)`)
  } catch (e) {
    if (e instanceof CheckFailed) result(scenario, 'fail', e.message)
    else result(scenario, 'fail', `at step '${step}': ${describe(e)}`)
  }
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

async function createTopic(admin, topic) {
  step = `createTopics ${topic}`
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 30000,
  })
  check(created === true, `createTopics(${topic}) returned ${created}, expected true (newly created)`)
}

// ------------------------------------------------------------------ admin

async function adminScenario() {
  const topic = `${prefix}kafkajs-admin`
  const admin = kafka('admin').admin()
  step = 'admin connect'
  await admin.connect()
  try {
    await createTopic(admin, topic)

    step = 'createTopics (same name again)'
    const again = await admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      timeout: 30000,
    })
    check(again === false, `creating existing topic again returned ${again}; expected false (TOPIC_ALREADY_EXISTS)`)

    step = 'listTopics'
    let names = await admin.listTopics()
    const deadline = Date.now() + 30000
    while (!names.includes(topic) && Date.now() < deadline) {
      await sleep(200)
      names = await admin.listTopics()
    }
    check(names.includes(topic), `listTopics lacks ${topic} after 30s: ${JSON.stringify(names)}`)

    step = 'describeCluster'
    const cluster = await admin.describeCluster()
    check(cluster.brokers.length === 1, `describeCluster: expected 1 broker, got ${JSON.stringify(cluster.brokers)}`)
    const node = cluster.brokers[0]
    check(node.nodeId >= 0 && node.port > 0 && node.host, `describeCluster: bad broker ${JSON.stringify(node)}`)
    check(typeof cluster.clusterId === 'string' && cluster.clusterId.length > 0,
      `describeCluster: empty cluster id ${JSON.stringify(cluster.clusterId)}`)
    check(cluster.controller === node.nodeId,
      `describeCluster: controller ${cluster.controller} is not the only broker ${node.nodeId}`)

    step = 'fetchTopicMetadata'
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    check(md.topics.length === 1 && md.topics[0].name === topic, `fetchTopicMetadata: ${JSON.stringify(md)}`)
    const parts = [...md.topics[0].partitions].sort((a, b) => a.partitionId - b.partitionId)
    check(parts.length === PARTITIONS, `fetchTopicMetadata: ${parts.length} partitions, expected ${PARTITIONS}`)
    parts.forEach((p, i) => {
      check(p.partitionId === i, `fetchTopicMetadata: partition ids ${JSON.stringify(parts.map(x => x.partitionId))}`)
      check(p.partitionErrorCode === 0, `fetchTopicMetadata: partition ${i} error code ${p.partitionErrorCode}`)
      check(p.leader === node.nodeId, `fetchTopicMetadata: partition ${i} leader ${p.leader}, expected ${node.nodeId}`)
      check(p.replicas.includes(node.nodeId), `fetchTopicMetadata: partition ${i} replicas ${p.replicas}`)
      check(p.isr.includes(node.nodeId), `fetchTopicMetadata: partition ${i} isr ${p.isr}`)
    })

    step = 'describeConfigs topic'
    const tc = await admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
      includeSynonyms: false,
    })
    check(tc.resources.length === 1, `describeConfigs(topic): ${tc.resources.length} resources`)
    const tr = tc.resources[0]
    check(tr.errorCode === 0, `describeConfigs(topic): error ${tr.errorCode} ${tr.errorMessage}`)
    const entry = n => tr.configEntries.find(e => e.configName === n)
    const retention = entry('retention.ms')
    const cleanup = entry('cleanup.policy')
    const keys = JSON.stringify(tr.configEntries.map(e => e.configName))
    check(retention && retention.configValue != null, `describeConfigs(topic): no retention.ms in ${keys}`)
    check(/^-?\d+$/.test(retention.configValue), `describeConfigs(topic): retention.ms = ${retention.configValue}`)
    check(cleanup && cleanup.configValue != null, `describeConfigs(topic): no cleanup.policy in ${keys}`)
    check(cleanup.configValue === 'delete',
      `describeConfigs(topic): cleanup.policy = ${cleanup.configValue}, expected default 'delete'`)

    step = 'describeConfigs broker'
    const bc = await admin.describeConfigs({
      resources: [{ type: ConfigResourceTypes.BROKER, name: String(node.nodeId) }],
      includeSynonyms: false,
    })
    const br = bc.resources[0]
    check(br && br.errorCode === 0, `describeConfigs(broker ${node.nodeId}): ${br ? `error ${br.errorCode} ${br.errorMessage}` : 'no resource'}`)
    check(br.configEntries.length > 0, `describeConfigs(broker ${node.nodeId}): no entries`)

    return `broker ${node.nodeId} ${node.host}:${node.port}, cluster ${cluster.clusterId}, controller ${cluster.controller}, ` +
      `3 partitions led by ${node.nodeId}, retention.ms=${retention.configValue} cleanup.policy=${cleanup.configValue}, ` +
      `broker configs: ${br.configEntries.length} entries`
  } finally {
    await withTimeout(admin.disconnect(), 10000, 'admin disconnect').catch(() => {})
  }
}

// ------------------------------------------------------------------ roundtrip

function valueFor(i) {
  if (i % 97 === 13) return null // a tombstone now and then
  if (i % 97 === 31) return Buffer.alloc(0)
  let s = `value-${i}-`
  const reps = 1 + ((i * 37) % 60) // ~10 bytes .. ~2 KB, compressible
  for (let r = 0; r < reps; r++) s += `lorem ipsum ${r % 7} `
  return Buffer.from(s)
}

const show = b => {
  if (b === null || b === undefined) return String(b)
  const s = b.toString()
  return s.length > 40 ? `'${s.slice(0, 40)}...' (${b.length} bytes)` : `'${s}'`
}
const sameBytes = (a, b) =>
  (a === null || a === undefined) ? (b === null || b === undefined) : (b !== null && b !== undefined && Buffer.compare(a, b) === 0)

async function roundtrip(codecName) {
  const codec = codecs[codecName]
  const topic = `${prefix}kafkajs-rt-${codecName}`
  const k = kafka(`rt-${codecName}`)

  const admin = k.admin()
  step = 'admin connect'
  await admin.connect()
  try {
    await createTopic(admin, topic)
  } finally {
    await withTimeout(admin.disconnect(), 10000, 'admin disconnect').catch(() => {})
  }

  const expected = Array.from({ length: PARTITIONS }, () => [])
  const baseTs = Math.floor(Date.now() / 1000) * 1000 - 3600000 // an hour ago, explicit
  const all = []
  for (let i = 0; i < RT_RECORDS; i++) {
    const p = i % PARTITIONS
    const rec = {
      partition: p,
      offset: expected[p].length,
      key: Buffer.from(`key-${i % 17}`),
      value: valueFor(i),
      headers: [['dup', `first-${i}`], ['dup', `second-${i}`]],
      timestamp: baseTs + i * 7,
    }
    expected[p].push(rec)
    all.push(rec)
  }

  const producer = k.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false })
  step = 'producer connect'
  await producer.connect()
  try {
    const per = Math.ceil(RT_RECORDS / SENDS)
    const sentSoFar = new Array(PARTITIONS).fill(0)
    for (let s = 0; s < SENDS; s++) {
      const chunk = all.slice(s * per, (s + 1) * per)
      step = `produce send ${s + 1}/${SENDS} (${codecName})`
      const res = await producer.send({
        topic,
        acks: -1,
        timeout: 30000,
        compression: codec.type,
        messages: chunk.map(r => ({
          key: r.key,
          value: r.value,
          partition: r.partition,
          timestamp: String(r.timestamp),
          headers: { dup: [Buffer.from(r.headers[0][1]), Buffer.from(r.headers[1][1])] },
        })),
      })
      for (const pr of res) {
        check(pr.errorCode === 0, `produce: partition ${pr.partition} error code ${pr.errorCode}`)
        check(String(pr.baseOffset) === String(sentSoFar[pr.partition]),
          `produce send ${s + 1}: partition ${pr.partition} baseOffset ${pr.baseOffset}, expected ${sentSoFar[pr.partition]}`)
      }
      for (const r of chunk) sentSoFar[r.partition]++
    }
  } finally {
    await withTimeout(producer.disconnect(), 10000, 'producer disconnect').catch(() => {})
  }

  // kafkajs consumes only through a consumer group: this step needs kelp's group APIs.
  const groupId = `${prefix}kafkajs-rt-${codecName}-group`
  const consumer = k.consumer({
    groupId,
    maxWaitTimeInMs: 500,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000, restartOnFailure: async () => false },
  })
  const got = Array.from({ length: PARTITIONS }, () => [])
  let crash = null
  consumer.on(consumer.events.CRASH, ({ payload }) => { crash = payload.error })
  step = 'consumer connect'
  await consumer.connect()
  try {
    step = 'consumer subscribe'
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    step = 'consumer run (FindCoordinator/JoinGroup/SyncGroup/OffsetFetch/Fetch)'
    await consumer.run({
      eachMessage: async ({ partition, message }) => { got[partition].push(message) },
    })
    const done = () => got.every((g, p) => g.length >= expected[p].length)
    const deadline = Date.now() + CONSUME_DEADLINE_MS
    while (!done() && !crash && Date.now() < deadline) await sleep(100)
    // The kafkajs ERROR log lines name the request that failed, e.g. "Response JoinGroup(key: 11, ...)".
    const errs = recentLogs.filter(l => /^ERROR /.test(l) && !/ Crash: /.test(l)).slice(-3).join(' ;; ')
    if (crash) {
      throw new CheckFailed(`at step '${step}': group consumer crashed: ${describe(crash)}` +
        ` (received ${got.map(g => g.length).join('/')} of ${expected.map(e => e.length).join('/')} records)` +
        (errs ? `; last kafkajs errors: ${errs}` : ''))
    }
    if (!done()) {
      throw new CheckFailed(`at step '${step}': received ${got.map(g => g.length).join('/')} of ` +
        `${expected.map(e => e.length).join('/')} records per partition within ${CONSUME_DEADLINE_MS / 1000}s` +
        (errs ? `; last kafkajs errors: ${errs}` : ''))
    }
    // Anything beyond the expected count that arrives shortly after is an extra/duplicate record.
    const settle = Date.now() + 500
    while (Date.now() < settle) await sleep(100)
  } finally {
    await withTimeout(consumer.disconnect(), 15000, 'consumer disconnect').catch(() => {})
  }

  step = 'compare'
  for (let p = 0; p < PARTITIONS; p++) {
    check(got[p].length === expected[p].length,
      `partition ${p}: received ${got[p].length} records, expected exactly ${expected[p].length}`)
    for (let j = 0; j < expected[p].length; j++) {
      const e = expected[p][j]
      const m = got[p][j]
      const where = `partition ${p} record #${j}: `
      check(m.offset === String(j), `${where}offset ${m.offset}, expected ${j}`)
      check(sameBytes(m.key, e.key), `${where}key ${show(m.key)}, expected ${show(e.key)}`)
      check(sameBytes(m.value, e.value), `${where}value ${show(m.value)}, expected ${show(e.value)}`)
      check(m.timestamp === String(e.timestamp), `${where}timestamp ${m.timestamp}, expected ${e.timestamp}`)
      const h = m.headers || {}
      const keys = Object.keys(h)
      const vals = Array.isArray(h.dup) ? h.dup.map(String) : h.dup !== undefined ? [String(h.dup)] : []
      const want = e.headers.map(x => x[1])
      check(keys.length === 1 && keys[0] === 'dup' && vals.length === 2 && vals[0] === want[0] && vals[1] === want[1],
        `${where}headers ${JSON.stringify(Object.fromEntries(keys.map(x => [x, Array.isArray(h[x]) ? h[x].map(String) : String(h[x])])))}` +
        `, expected {"dup":${JSON.stringify(want)}}`)
    }
  }
  return `${RT_RECORDS} records (${expected.map(e => e.length).join('/')} per partition) in ${SENDS} sends with codec ` +
    `${codecName}, 2 same-key headers each, explicit timestamps; read back via group ${groupId}; all match`
}


// ------------------------------------------------------------------ consumer groups

// Scenarios group-split, group-leave, group-resume, group-two-groups (see runGroupScenarios).
// Members commit with kafkajs' autoCommit (after every batch, and when a heartbeat reports a
// rebalance) unless a scenario commits by hand. Waits poll observable state with deadlines.
const GROUP_DEADLINE_MS = Number(process.env.KELP_INTEROP_GROUP_DEADLINE_S || 75) * 1000
const GROUP_HEARTBEAT_MS = 500
const GROUP_SESSION_MS = 45000

async function waitUntil(what, cond, timeoutMs = GROUP_DEADLINE_MS) {
  const t0 = Date.now()
  let state = ''
  for (;;) {
    const [done, st] = await cond()
    state = st
    if (done) return (Date.now() - t0) / 1000
    if (Date.now() - t0 > timeoutMs) {
      throw new CheckFailed(`at step '${step}': ${what}: not reached within ${timeoutMs / 1000}s; last state: ${state}`)
    }
    await sleep(150)
  }
}

const fmtOwned = owned => '{' + Object.entries(owned).map(([k, v]) => `${k}: [${[...v].sort((a, b) => a - b).join(', ')}]`).join(', ') + '}'
const sameSet = (a, b) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i])

function splitProblem(owned, partitions) {
  const owners = {}
  for (const [m, ps] of Object.entries(owned)) for (const p of ps) (owners[p] = owners[p] || []).push(m)
  const probs = []
  const twice = Object.entries(owners).filter(([, ms]) => ms.length > 1)
  if (twice.length) probs.push(`owned by more than one member: ${JSON.stringify(Object.fromEntries(twice))}`)
  const missing = []
  for (let p = 0; p < partitions; p++) if (!owners[p]) missing.push(p)
  if (missing.length) probs.push(`owned by nobody: [${missing}]`)
  const idle = Object.entries(owned).filter(([, ps]) => ps.length === 0).map(([m]) => m)
  if (idle.length) probs.push(`members owning nothing: [${idle}]`)
  return probs.length ? probs.join('; ') : null
}

// What the members of one group consumed, checked against what was produced. The members run
// concurrently with the test, so records are compared only in check() (a record may arrive
// before produceSpread() has returned its offset).
class ConsumedLog {
  constructor(topic) {
    this.topic = topic
    this.seen = new Map() // "p:offset" -> [[member name, key]]
  }
  add(member, p, offset, key) {
    const k = `${p}:${offset}`
    if (!this.seen.has(k)) this.seen.set(k, [])
    this.seen.get(k).push([member, key])
  }
  complete(produced) {
    let n = 0
    for (const k of produced.keys()) if (this.seen.has(k)) n++
    return [n, produced.size]
  }
  check(produced, what, problems = '') {
    for (const [k, readers] of this.seen) {
      const want = produced.get(k)
      const bad = readers.find(([, key]) => key !== want)
      if (bad) {
        throw new CheckFailed(`at step '${step}': ${this.topic}: member ${bad[0]} read partition:offset ${k} with key ${bad[1]}, ` +
          `but ${want === undefined ? 'nothing' : want} was produced there${problems}`)
      }
    }
    const missing = [...produced.keys()].filter(k => !this.seen.has(k))
    if (missing.length) {
      throw new CheckFailed(`at step '${step}': ${this.topic}: ${missing.length} of ${produced.size} records never consumed by ${what}; first (partition:offset): ${missing.slice(0, 5)}${problems}`)
    }
    const dups = [...this.seen.entries()].filter(([, v]) => v.length > 1).map(([k, v]) => [k, v.map(x => x[0])])
    if (dups.length) {
      throw new CheckFailed(`at step '${step}': ${this.topic}: ${dups.length} records consumed more than once by ${what}; first (partition:offset readers): ${JSON.stringify(dups.slice(0, 4))}${problems}`)
    }
  }
}

// Produce n records, record i to partition i % partitions, in one send; returns Map "p:offset" -> key
// (offsets continue after `before`, which must hold what the topic already has).
async function produceSpread(topic, n, partitions, tag, before = new Map()) {
  const producer = kafka(`grp-${tag}`).producer({ allowAutoTopicCreation: false })
  step = `produce ${n} records to ${topic}`
  await producer.connect()
  const out = new Map()
  try {
    const messages = Array.from({ length: n }, (_, i) => ({
      key: `${tag}-key-${i}`,
      value: valueFor(i) || Buffer.from(`v${i}`),
      partition: i % partitions,
      headers: { dup: [Buffer.from(`first-${i}`), Buffer.from(`second-${i}`)] },
    }))
    const res = await producer.send({ topic, acks: -1, timeout: 30000, messages })
    const base = {}
    for (const pr of res) {
      check(pr.errorCode === 0, `produce: partition ${pr.partition} error code ${pr.errorCode}`)
      base[pr.partition] = Number(pr.baseOffset)
    }
    const next = {}
    for (let p = 0; p < partitions; p++) {
      const had = [...before.keys()].filter(k => k.startsWith(`${p}:`)).length
      check(base[p] === had, `produce: partition ${p} baseOffset ${base[p]}, expected ${had}`)
      next[p] = base[p]
    }
    for (const m of messages) out.set(`${m.partition}:${next[m.partition]++}`, m.key)
  } finally {
    await withTimeout(producer.disconnect(), 10000, 'producer disconnect').catch(() => {})
  }
  return out
}

class GroupMember {
  // opts: autoCommit (default true), fromBeginning (default true)
  constructor(name, groupId, topic, log, opts = {}) {
    Object.assign(this, { name, groupId, topic, log, opts })
    this.owned = new Set()
    this.memberId = null
    this.events = []
    this.read = {} // partition -> [offsets]
    this.fetches = 0
    this.lastHeartbeat = null
    this.crash = null
    this.stopped = false
    this.onChange = () => {}
  }

  async start() {
    const c = kafka(`grp-${this.name}`).consumer({
      groupId: this.groupId,
      sessionTimeout: GROUP_SESSION_MS,
      heartbeatInterval: GROUP_HEARTBEAT_MS,
      maxWaitTimeInMs: 250,
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000, restartOnFailure: async () => false },
    })
    this.c = c
    c.on(c.events.GROUP_JOIN, ({ payload }) => {
      this.memberId = payload.memberId
      this.owned = new Set((payload.memberAssignment[this.topic] || []).map(Number))
      this.fetches = 0
      this.events.push(['join', [...this.owned]])
      this.onChange()
    })
    c.on(c.events.REBALANCING, () => {
      this.owned = new Set() // eager: it rejoins owning nothing
      this.events.push(['rebalancing'])
      this.onChange()
    })
    c.on(c.events.FETCH, () => { this.fetches++ })
    c.on(c.events.HEARTBEAT, () => { this.lastHeartbeat = Date.now() })
    c.on(c.events.CRASH, ({ payload }) => { this.crash = payload.error })
    step = `${this.name}: connect/subscribe/run`
    await c.connect()
    await c.subscribe({ topics: [this.topic], fromBeginning: this.opts.fromBeginning !== false })
    await c.run({
      autoCommit: this.opts.autoCommit !== false,
      eachMessage: async ({ partition, message }) => {
        const o = Number(message.offset)
        this.log.add(this.name, partition, o, message.key && message.key.toString())
        ;(this.read[partition] = this.read[partition] || []).push(o)
      },
    })
    return this
  }

  async stop() {
    if (this.stopped) return
    this.stopped = true
    this.owned = new Set()
    await withTimeout(this.c.disconnect(), 30000, `${this.name} disconnect`).catch(() => {})
  }
}

class GroupFleet {
  constructor(admin, groupId, topic, partitions) {
    Object.assign(this, { admin, groupId, topic, partitions })
    this.members = []
    this.overlap = null
  }
  live() { return this.members.filter(m => !m.stopped) }
  async add(m) {
    m.onChange = () => this.checkOverlap()
    this.members.push(m)
    return m.start()
  }
  checkOverlap() {
    const owners = {}
    for (const m of this.live()) for (const p of m.owned) (owners[p] = owners[p] || []).push(m.name)
    const both = Object.entries(owners).filter(([, ms]) => ms.length > 1)
    if (both.length && !this.overlap) {
      this.overlap = `${JSON.stringify(Object.fromEntries(both))} (owned: ${fmtOwned(this.ownedMap())}; ${this.heartbeatAges()})`
    }
  }
  // A member the broker expired still believes it owns its partitions: show who stopped heartbeating.
  heartbeatAges() {
    const ages = this.live().map(m => `${m.name}: ${m.lastHeartbeat ? ((Date.now() - m.lastHeartbeat) / 1000).toFixed(1) + 's' : 'never'}`)
    return `last successful heartbeat ago: {${ages.join(', ')}}`
  }
  ownedMap() { return Object.fromEntries(this.live().map(m => [m.name, [...m.owned].sort((a, b) => a - b)])) }
  guard() {
    if (this.overlap) throw new CheckFailed(`at step '${step}': group ${this.groupId}: two members owned a partition at the same time: ${this.overlap}`)
    const crashed = this.members.find(m => m.crash)
    if (crashed) throw new CheckFailed(`at step '${step}': ${crashed.name} crashed: ${describe(crashed.crash)}`)
  }
  async describe() {
    const { groups } = await this.admin.describeGroups([this.groupId])
    const g = groups[0]
    const members = {}
    for (const mb of g.members) {
      let parts = []
      const a = mb.memberAssignment && mb.memberAssignment.length ? AssignerProtocol.MemberAssignment.decode(mb.memberAssignment) : null
      if (a && a.assignment[this.topic]) parts = a.assignment[this.topic].map(Number).sort((x, y) => x - y)
      members[mb.memberId] = parts
    }
    return { state: g.state, members }
  }
  async settled() {
    this.guard()
    const owned = this.ownedMap()
    let d
    try {
      d = await this.describe()
    } catch (e) {
      return [false, `describeGroups failed: ${describe(e)}; clients ${fmtOwned(owned)}`]
    }
    const live = this.live()
    const txt = `broker: ${d.state}, members ${JSON.stringify(Object.fromEntries(Object.entries(d.members).map(([k, v]) => [k.slice(0, 40), v])))}; clients: owned ${fmtOwned(owned)}`
    const ok = d.state === 'Stable' &&
      sameSet(Object.keys(d.members), live.map(m => m.memberId)) &&
      live.every(m => JSON.stringify(d.members[m.memberId]) === JSON.stringify(owned[m.name])) &&
      splitProblem(owned, this.partitions) === null
    return [ok, txt]
  }
  async waitSettled(what, timeoutMs) {
    let txt = ''
    const dt = await waitUntil(what, async () => {
      const r = await this.settled()
      txt = r[1]
      return r
    }, timeoutMs)
    return [dt, this.ownedMap(), txt]
  }
  async waitConsumed(what, produced) {
    return waitUntil(what, async () => {
      this.guard()
      const [n, total] = this.members[0].log.complete(produced)
      return [n === total, `${n}/${total} records consumed; owned ${fmtOwned(this.ownedMap())}; ${this.heartbeatAges()}`]
    })
  }
  async committed() {
    const res = await this.admin.fetchOffsets({ groupId: this.groupId, topics: [this.topic] })
    const out = {}
    for (const p of res[0].partitions) out[p.partition] = Number(p.offset)
    return out
  }
  async stopAll() {
    for (const m of this.live()) await m.stop()
  }
}

const splitTxt = owned => Object.entries(owned).map(([k, v]) => `${k}: [${v.join(', ')}]`).join(', ')

async function createGroupTopic(admin, topic, partitions) {
  step = `createTopics ${topic}`
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 30000,
  })
  check(created === true, `createTopics(${topic}) returned ${created}, expected true (newly created)`)
}

function newFleet(admin, name, partitions, topic) {
  return new GroupFleet(admin, `${prefix}kafkajs-g-${name}`, topic || `${prefix}kafkajs-g-${name}`, partitions)
}

const groupState = {} // shared by group-split and group-leave

async function groupSplit(admin) {
  const fl = newFleet(admin, 'split', 6)
  groupState.split = { fl }
  await createGroupTopic(admin, fl.topic, 6)
  const produced = await produceSpread(fl.topic, 600, 6, 'gs-a')
  groupState.split.produced = produced
  const log = new ConsumedLog(fl.topic)
  step = 'start 3 members'
  const t0 = Date.now()
  await Promise.all([1, 2, 3].map(i => fl.add(new GroupMember(`split-${i}`, fl.groupId, fl.topic, log))))
  step = 'wait for the split'
  const [, owned] = await fl.waitSettled('3 members splitting 6 partitions')
  groupState.split.ok = true
  return `3 members, split ${splitTxt(owned)}, stable ${((Date.now() - t0) / 1000).toFixed(1)}s after they started`
}

async function groupLeave(admin) {
  const st = groupState.split
  check(st && st.ok, 'group-split did not reach a split group; nothing to leave from')
  const { fl, produced } = st
  fl.admin = admin // group-split's admin client is gone
  step = 'read the first 600 records'
  await fl.waitConsumed('the 3 members reading the first 600 records', produced)
  const leaver = fl.live()[2]
  const had = [...leaver.owned].sort((a, b) => a - b)
  step = `${leaver.name} disconnects (LeaveGroup)`
  await leaver.stop()
  step = 'wait for the 2 others to own everything'
  const [dt, owned] = await fl.waitSettled(`the 2 remaining members owning all 6 partitions after a LeaveGroup (sessionTimeout ${GROUP_SESSION_MS} ms; a leave must not wait for it)`, 40000)
  const more = await produceSpread(fl.topic, 600, 6, 'gs-b', produced)
  for (const [k, v] of more) produced.set(k, v)
  step = 'consume everything'
  await fl.waitConsumed('consuming everything produced before and after the leave', produced)
  fl.members[0].log.check(produced, `group ${fl.groupId}`)
  step = 'committed offsets'
  let committed = {}
  await waitUntil('committed offsets at the end of every partition (autoCommit after each batch)', async () => {
    committed = await fl.committed()
    return [Object.keys(committed).length === 6 && Object.values(committed).every(o => o === 200), `committed ${JSON.stringify(committed)}`]
  })
  const per = fl.members.map(m => Object.values(m.read).reduce((a, v) => a + v.length, 0))
  return `all read the first 600 records; ${leaver.name} (owning [${had}]) left; ${splitTxt(owned)} ${dt.toFixed(1)}s later; ` +
    `1200 records consumed exactly once (per member ${per.join('/')}), committed 200 x 6`
}

async function groupResume(admin) {
  const topic = `${prefix}kafkajs-g-resume`
  await createGroupTopic(admin, topic, 4)
  const produced = await produceSpread(topic, 400, 4, 'gr')
  const target = { 0: 37, 1: 100, 2: 1, 3: 0 }
  const fl1 = newFleet(admin, 'resume', 4, topic)
  const first = new GroupMember('resume-1', fl1.groupId, topic, new ConsumedLog(topic), { autoCommit: false })
  try {
    await fl1.add(first)
    step = 'first member reads up to the offsets it will commit'
    await waitUntil('the first member reading up to the offsets it will commit', async () => {
      fl1.guard()
      const mine = Object.keys(target).map(p => (first.read[p] || []).filter(o => o < target[p]).sort((a, b) => a - b))
      const ok = Object.keys(target).every((p, i) => mine[i].length === target[p] && mine[i].every((o, j) => o === j))
      return [ok, `processed ${mine.map(x => x.length)} of ${Object.values(target)}; owned [${[...first.owned]}]`]
    })
    step = 'commitOffsets of the processed part'
    await first.c.commitOffsets(Object.entries(target).map(([p, o]) => ({ topic, partition: Number(p), offset: String(o) })))
    const got = await fl1.committed()
    check(JSON.stringify(got) === JSON.stringify(target), `committed offsets right after committing ${JSON.stringify(target)}: ${JSON.stringify(got)}`)
  } finally {
    await fl1.stopAll()
  }
  step = 'group goes Empty'
  await waitUntil(`group ${fl1.groupId} Empty after its only member left`, async () => {
    const d = await fl1.describe()
    return [d.state === 'Empty' && Object.keys(d.members).length === 0, `${d.state} with ${Object.keys(d.members).length} members`]
  })
  const rest = new Map([...produced].filter(([k]) => { const [p, o] = k.split(':').map(Number); return o >= target[p] }))
  const fl2 = newFleet(admin, 'resume', 4, topic)
  const seen = await fl2.committed()
  check(JSON.stringify(seen) === JSON.stringify(target), `a new member's group has committed offsets ${JSON.stringify(seen)}, expected ${JSON.stringify(target)}`)
  // fromBeginning: a lost commit would re-read from 0
  const second = new GroupMember('resume-new', fl2.groupId, topic, new ConsumedLog(topic))
  try {
    await fl2.add(second)
    step = 'the new member reads to the end'
    await waitUntil('the new member reading to the end of every partition', async () => {
      fl2.guard()
      const last = Object.keys(target).map(p => { const r = second.read[p] || []; return r.length ? r[r.length - 1] : null })
      const ok = Object.keys(target).every((p, i) => target[p] === 100 || last[i] === 99) && second.owned.size === 4 && second.fetches >= 2
      return [ok, `last offsets read ${JSON.stringify(last)}; owned [${[...second.owned]}]; fetches since joining ${second.fetches}`]
    })
    for (const p of Object.keys(target)) {
      const offs = second.read[p] || []
      const want = Array.from({ length: 100 - target[p] }, (_, i) => target[p] + i)
      check(JSON.stringify(offs) === JSON.stringify(want),
        `partition ${p} committed at ${target[p]}: the new member read offsets ${offs.slice(0, 3)}..${offs.slice(-3)} (${offs.length} records), expected ${target[p]}..99`)
    }
    second.log.check(rest, 'the new member')
  } finally {
    await fl2.stopAll()
  }
  const firsts = Object.keys(target).map(p => (second.read[p] || ['-'])[0])
  return `committed ${JSON.stringify(target)} of 4x100 records; the group went Empty; a new member started at [${firsts}], ` +
    `read ${Object.values(target).reduce((a, o) => a + 100 - o, 0)} records, none twice, none missing`
}

async function groupTwoGroups(admin) {
  const topic = `${prefix}kafkajs-g-two`
  await createGroupTopic(admin, topic, 3)
  const produced = await produceSpread(topic, 300, 3, 'g2')
  const fa = newFleet(admin, 'two-a', 3, topic)
  const fb = newFleet(admin, 'two-b', 3, topic)
  const la = new ConsumedLog(topic)
  const lb = new ConsumedLog(topic)
  const half = { 0: 50, 1: 50, 2: 50 }
  let ca, cb
  try {
    step = 'start group a (2 members) and group b (1 member, no autoCommit)'
    await Promise.all([
      fa.add(new GroupMember('two-a-1', fa.groupId, topic, la)),
      fa.add(new GroupMember('two-a-2', fa.groupId, topic, la)),
      fb.add(new GroupMember('two-b-1', fb.groupId, topic, lb, { autoCommit: false })),
    ])
    await waitUntil('both groups reading the whole topic', async () => {
      fa.guard()
      fb.guard()
      const a = la.complete(produced)
      const b = lb.complete(produced)
      return [a[0] === a[1] && b[0] === b[1], `group a read ${a[0]}/${a[1]}, group b ${b[0]}/${b[1]}`]
    })
    la.check(produced, `group ${fa.groupId}`)
    lb.check(produced, `group ${fb.groupId}`)
    step = 'group b commits half'
    await fb.members[0].c.commitOffsets(Object.entries(half).map(([p, o]) => ({ topic, partition: Number(p), offset: String(o) })))
    step = 'committed offsets of both groups'
    await waitUntil('group a committed 100 x 3 (autoCommit), group b 50 x 3', async () => {
      ca = await fa.committed()
      cb = await fb.committed()
      const ok = [0, 1, 2].every(p => ca[p] === 100 && cb[p] === 50)
      return [ok, `group a ${JSON.stringify(ca)}, group b ${JSON.stringify(cb)}`]
    })
    const da = await fa.describe()
    const db = await fb.describe()
    check(Object.keys(da.members).length === 2 && Object.keys(db.members).length === 1,
      `describeGroups: group a ${da.state} ${Object.keys(da.members).length} members, group b ${db.state} ${Object.keys(db.members).length} members`)
  } finally {
    await fa.stopAll()
    await fb.stopAll()
  }
  // New members of both groups (fromBeginning: a lost commit would re-read from 0).
  const restB = new Map([...produced].filter(([k]) => Number(k.split(':')[1]) >= 50))
  const na = newFleet(admin, 'two-a', 3, topic)
  const nb = newFleet(admin, 'two-b', 3, topic)
  const a2 = new GroupMember('two-a-new', na.groupId, topic, new ConsumedLog(topic))
  const b2 = new GroupMember('two-b-new', nb.groupId, topic, new ConsumedLog(topic))
  try {
    step = 'new members of both groups'
    await Promise.all([na.add(a2), nb.add(b2)])
    await waitUntil('new members of both groups reading to the end', async () => {
      na.guard()
      nb.guard()
      const lastB = [0, 1, 2].map(p => { const r = b2.read[p] || []; return r.length ? r[r.length - 1] : null })
      const ok = a2.owned.size === 3 && a2.fetches >= 2 && b2.owned.size === 3 && lastB.every(o => o === 99)
      return [ok, `two-a-new owns [${[...a2.owned]}], ${a2.fetches} fetches since joining, read ${JSON.stringify(a2.read)}; two-b-new owns [${[...b2.owned]}], last offsets ${JSON.stringify(lastB)}`]
    })
    check(Object.keys(a2.read).length === 0, `a new member of group a (committed 100 x 3) read records again: ${JSON.stringify(Object.fromEntries(Object.entries(a2.read).map(([p, o]) => [p, [o[0], o.length]])))}`)
    b2.log.check(restB, 'a new member of group b')
  } finally {
    await na.stopAll()
    await nb.stopAll()
  }
  const bfirst = [0, 1, 2].map(p => (b2.read[p] || ['-'])[0])
  return `group a (2 members) and group b (1 member) each read all 300 records once; committed a ${JSON.stringify(ca)}, b ${JSON.stringify(cb)}; ` +
    `new members: a read nothing, b resumed at [${bfirst}]`
}

const GROUP_SCENARIOS = {
  'group-split': groupSplit,
  'group-leave': groupLeave,
  'group-resume': groupResume,
  'group-two-groups': groupTwoGroups,
}

async function runGroupScenario(name) {
  const admin = kafka(`grp-admin-${name}`).admin()
  try {
    step = 'admin connect'
    await admin.connect()
    await run(name, 240000, () => GROUP_SCENARIOS[name](admin))
  } finally {
    // group-split leaves its members running for group-leave; stop them after group-leave (or at the end)
    if (name === 'group-leave' || (name === 'group-split' && !wantLeave)) {
      if (groupState.split) await groupState.split.fl.stopAll().catch(() => {})
    }
    await withTimeout(admin.disconnect(), 10000, 'admin disconnect').catch(() => {})
  }
}
let wantLeave = false

// ------------------------------------------------------------------ main

async function main() {
  const scenarios = process.argv.length > 2
    ? process.argv.slice(2)
    : ['admin', ...Object.keys(codecs).map(c => `roundtrip-${c}`), ...Object.keys(GROUP_SCENARIOS)]
  if (!bootstrap) {
    for (const s of scenarios) result(s, 'fail', 'KELP_BOOTSTRAP is not set')
    return 1
  }
  wantLeave = scenarios.includes('group-leave')
  for (const s of scenarios) {
    if (GROUP_SCENARIOS[s]) {
      await runGroupScenario(s)
    } else if (s === 'admin') {
      await run(s, 120000, adminScenario)
    } else if (s.startsWith('roundtrip-') && codecs[s.slice('roundtrip-'.length)]) {
      const name = s.slice('roundtrip-'.length)
      if (codecs[name].pkg && !codecs[name].available) result(s, codecs[name].notApplicable ? 'n/a' : 'skip', codecs[name].why)
      else await run(s, 180000, () => roundtrip(name))
    } else {
      result(s, 'fail', 'unknown scenario')
    }
  }
  return anyFail ? 1 : 0
}

process.on('unhandledRejection', e => process.stderr.write(`unhandled rejection: ${describe(e)}\n`))
main().then(
  code => process.exit(code),
  e => { process.stderr.write(`fatal: ${e && e.stack}\n`); process.exit(2) },
)
