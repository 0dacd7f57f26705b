// A js-libp2p reference gossipsub mesh for the side-by-side benchmark (scripts/bench_gossip.py).
//
// Usage: node mesh.mjs <first node index> <node count> <topic>
//
// Runs <node count> libp2p nodes in this process (TCP on 127.0.0.1, Noise, Yamux, identify, gossipsub with
// StrictSign, a 1 s heartbeat and the default D=6/4/12, as the Python node), all subscribed to <topic>. It speaks
// the worker protocol of scripts/bench_gossip.py, one line per command on stdin and one answer on stdout:
//   (start)                      ADDR <index> <multiaddr> for each node, then READY
//   DIAL <json [[from, addr]]>   each local node <from> dials <addr>; DIALED
//   WAITMESH <timeout_s>         until every local node has a mesh peer; MESHED or TIMEOUT
//   RESET <publisher> <phase>    forget deliveries, count only messages of <phase>, start the CPU clock; OK
//   PUB <index> <count> <rate> <size>
//                                node <index> publishes <count> messages of <size> bytes at <rate> per second,
//                                each "<phase> <seq> <unix ns> " padded with 'x'; PUBDONE <achieved rate per second>
//   COLLECT <count> <timeout_s>  until every local node other than the publisher has <count> messages; DONE
//   STATS                        STATS <json: latencies in ms, missing, cpu_s since RESET, deliveries>
//   QUIT                         stops the nodes and exits
// Diagnostics go to stderr only.

import { createInterface } from 'node:readline'
import { createGossipPeer, multiaddr } from './peer.mjs'

const [firstArg, countArg, topic] = process.argv.slice(2)
const first = Number.parseInt(firstArg, 10)
const count = Number.parseInt(countArg, 10)
if (!Number.isInteger(first) || !Number.isInteger(count) || count < 1 || !topic) {
  process.stderr.write('usage: node mesh.mjs <first index> <count> <topic>\n')
  process.exit(2)
}

const out = (line) => process.stdout.write(`${line}\n`)
const log = (line) => process.stderr.write(`[mesh] ${line}\n`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const decoder = new TextDecoder()

const nodes = new Map() // index -> libp2p node
let received = new Map() // index -> Map(seq -> latency ms)
let publisher = -1
let phase = '0'
let cpu0 = process.cpuUsage()

for (let i = first; i < first + count; i++) {
  const node = await createGossipPeer({ listen: ['/ip4/127.0.0.1/tcp/0'], gossip: { D: 6, Dlo: 4, Dhi: 12 } })
  node.services.pubsub.addEventListener('message', (evt) => {
    const msg = evt.detail
    if (msg.topic !== topic) return
    const text = decoder.decode(msg.data.subarray(0, 48))
    const [phaseText, seqText, tsText] = text.split(' ', 3)
    if (phaseText !== phase) return
    const latencyMs = Number(nowNs() - BigInt(tsText)) / 1e6
    const mine = received.get(i)
    if (!mine.has(seqText)) mine.set(seqText, latencyMs)
  })
  node.services.pubsub.subscribe(topic)
  nodes.set(i, node)
  received.set(i, new Map())
  out(`ADDR ${i} ${node.getMultiaddrs()[0].toString()}`)
}
out('READY')

// Wall-clock ns with sub-ms resolution, comparable across processes (publish stamps use the same clock).
const originNs = BigInt(Date.now()) * 1000000n - process.hrtime.bigint()
function nowNs () {
  return originNs + process.hrtime.bigint()
}

function cpuSeconds () {
  const used = process.cpuUsage(cpu0)
  return (used.user + used.system) / 1e6
}

async function publish (index, total, rate, size) {
  const pubsub = nodes.get(index).services.pubsub
  const intervalNs = BigInt(Math.round(1e9 / rate))
  const start = nowNs()
  for (let seq = 0; seq < total; seq++) {
    const due = start + BigInt(seq) * intervalNs
    const wait = Number(due - nowNs()) / 1e6
    if (wait > 0) await sleep(wait)
    const head = `${phase} ${seq} ${nowNs()} `
    const data = new Uint8Array(Math.max(size, head.length)).fill(0x78)
    data.set(new TextEncoder().encode(head))
    try {
      await pubsub.publish(topic, data)
    } catch (err) {
      log(`publish ${seq} failed: ${err?.message ?? err}`)
    }
  }
  const elapsed = Number(nowNs() - start) / 1e9
  return total > 1 && elapsed > 0 ? (total - 1) / elapsed : rate
}

async function collect (total, timeoutS) {
  const deadline = Date.now() + timeoutS * 1000
  while (Date.now() < deadline) {
    let complete = true
    for (const [index, mine] of received) {
      if (index !== publisher && mine.size < total) { complete = false; break }
    }
    if (complete) return
    await sleep(10)
  }
}

function stats (total) {
  const latencies = []
  let missing = 0
  for (const [index, mine] of received) {
    if (index === publisher) continue
    for (const value of mine.values()) latencies.push(value)
    missing += Math.max(0, total - mine.size)
  }
  return { latencies_ms: latencies, missing, cpu_s: cpuSeconds(), deliveries: latencies.length }
}

let lastCount = 0
const commands = createInterface({ input: process.stdin })
for await (const line of commands) {
  const [cmd, ...args] = line.trim().split(' ')
  try {
    if (cmd === 'DIAL') {
      const pairs = JSON.parse(args.join(' '))
      await Promise.all(pairs.map(async ([from, addr]) => {
        for (let attempt = 0; ; attempt++) {
          try {
            await nodes.get(from).dial(multiaddr(addr))
            return
          } catch (err) {
            if (attempt >= 4) throw err
            await sleep(200)
          }
        }
      }))
      out('DIALED')
    } else if (cmd === 'WAITMESH') {
      const deadline = Date.now() + Number(args[0]) * 1000
      let meshed = false
      while (!meshed && Date.now() < deadline) {
        meshed = [...nodes.values()].every((n) => n.services.pubsub.getMeshPeers(topic).length >= 1)
        if (!meshed) await sleep(50)
      }
      const alone = [...nodes].filter(([, n]) => n.services.pubsub.getMeshPeers(topic).length < 1).map(([i]) => i)
      out(meshed ? 'MESHED' : `TIMEOUT nodes without a mesh peer: ${JSON.stringify(alone)}`)
    } else if (cmd === 'RESET') {
      received = new Map([...nodes.keys()].map((i) => [i, new Map()]))
      publisher = Number(args[0])
      phase = args[1]
      cpu0 = process.cpuUsage()
      out('OK')
    } else if (cmd === 'PUB') {
      const [index, total, rate, size] = args.map(Number)
      lastCount = total
      out(`PUBDONE ${await publish(index, total, rate, size)}`)
    } else if (cmd === 'COLLECT') {
      lastCount = Number(args[0])
      await collect(lastCount, Number(args[1]))
      out('DONE')
    } else if (cmd === 'STATS') {
      out(`STATS ${JSON.stringify(stats(lastCount))}`)
    } else if (cmd === 'QUIT') {
      break
    } else if (cmd) {
      log(`unknown command: ${cmd}`)
      out('ERROR unknown command')
    }
  } catch (err) {
    log(`${cmd} failed: ${err?.stack ?? err}`)
    out(`ERROR ${String(err?.message ?? err).replace(/\s+/g, ' ')}`)
  }
}
await Promise.race([Promise.all([...nodes.values()].map((n) => n.stop())), sleep(3000)])
process.exit(0)
