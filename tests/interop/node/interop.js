'use strict'
// kafkajs interop scenarios against a running kelp. Contract: tests/interop/README.md.
// Usage: node interop.js [scenario...]   (env: KELP_BOOTSTRAP, KELP_TOPIC_PREFIX)
// Prints one `RESULT|kafkajs|<scenario>|<status>|<detail>` line per scenario; exit 1 if any failed.

const {
  Kafka,
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

// ------------------------------------------------------------------ main

async function main() {
  const scenarios = process.argv.length > 2
    ? process.argv.slice(2)
    : ['admin', ...Object.keys(codecs).map(c => `roundtrip-${c}`)]
  if (!bootstrap) {
    for (const s of scenarios) result(s, 'fail', 'KELP_BOOTSTRAP is not set')
    return 1
  }
  for (const s of scenarios) {
    if (s === 'admin') {
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
