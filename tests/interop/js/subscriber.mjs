// A js-libp2p peer for the gossip interop test (tests/integration/test_js_interop.py).
//
// Usage: node subscriber.mjs <multiaddr of the remote peer, with /p2p/<id>> <topic> [count] [timeout_s]
//
// Standard libp2p only: TCP, Noise, Yamux, identify, gossipsub with StrictSign and the default message ids.
// It dials the remote peer, subscribes to <topic> and reports on stdout, one line each:
//   PEER <own peer id>       once started
//   READY                    once subscribed and the remote peer is in our mesh for <topic>
//   MSG <hex>                for every message received on <topic>
//   PUBLISHED <n>            after a "PUB <hex>" command from stdin (n = peers it was sent to)
//   PUBERR <reason>          when such a publish failed
//   TIMEOUT                  when <timeout_s> passed first
// Exit codes: 0 after <count> messages (count > 0) or, when count is 0, when stdin is closed;
// 1 on timeout or when stdin closes before <count> messages; 2 on a startup or dial error.
// Diagnostics go to stderr only.

import { Buffer } from 'node:buffer'
import { createInterface } from 'node:readline'
import { createGossipPeer, multiaddr } from './peer.mjs'

const [addrArg, topic, countArg = '1', timeoutArg = '30'] = process.argv.slice(2)
if (!addrArg || !topic) {
  process.stderr.write('usage: node subscriber.mjs <multiaddr/p2p/id> <topic> [count] [timeout_s]\n')
  process.exit(2)
}
const wanted = Number.parseInt(countArg, 10)
const timeoutMs = Number.parseFloat(timeoutArg) * 1000
if (!Number.isInteger(wanted) || wanted < 0 || !(timeoutMs > 0)) {
  process.stderr.write('count must be an integer >= 0 and timeout_s a positive number\n')
  process.exit(2)
}

const remote = multiaddr(addrArg)
const remotePeer = remote.getPeerId()
if (!remotePeer) {
  process.stderr.write(`the multiaddr needs a /p2p/<peer id> part: ${addrArg}\n`)
  process.exit(2)
}

const out = (line) => process.stdout.write(`${line}\n`)
const log = (line) => process.stderr.write(`[js] ${line}\n`)
const toHex = (bytes) => Buffer.from(bytes).toString('hex')

const node = await createGossipPeer()
const pubsub = node.services.pubsub

let received = 0
let finished = false
const timer = setTimeout(() => finish(1, 'TIMEOUT'), timeoutMs)

async function finish (code, line) {
  if (finished) return
  finished = true
  clearTimeout(timer)
  if (line) out(line)
  try {
    await Promise.race([node.stop(), new Promise((resolve) => setTimeout(resolve, 2000))])
  } catch (err) {
    log(`stop failed: ${err?.message ?? err}`)
  }
  process.exit(code)
}

process.on('SIGTERM', () => { finish(143) })
process.on('SIGINT', () => { finish(130) })

pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  if (msg.topic !== topic) return
  if (msg.type !== 'signed') {
    log('dropping an unsigned message')
    return
  }
  received += 1
  log(`message ${received} from ${msg.from.toString()} seqno ${msg.sequenceNumber}`)
  out(`MSG ${toHex(msg.data)}`)
  if (wanted > 0 && received >= wanted) finish(0)
})

out(`PEER ${node.peerId.toString()}`)
pubsub.subscribe(topic)
try {
  await node.dial(remote)
} catch (err) {
  log(`dial ${addrArg} failed: ${err?.stack ?? err}`)
  await finish(2)
}
log(`connected to ${remotePeer}`)

// READY once the remote is in our mesh for the topic (it subscribed and we grafted it in a heartbeat).
await new Promise((resolve) => {
  const check = () => {
    if (pubsub.getMeshPeers(topic).includes(remotePeer)) {
      pubsub.removeEventListener('gossipsub:heartbeat', check)
      resolve()
    }
  }
  pubsub.addEventListener('gossipsub:heartbeat', check)
  check()
})
out('READY')

// Commands on stdin: "PUB <hex>" publishes <hex> on the topic.
const commands = createInterface({ input: process.stdin })
commands.on('line', async (line) => {
  const [cmd, arg = ''] = line.trim().split(/\s+/, 2)
  if (cmd !== 'PUB') {
    if (cmd) log(`unknown command: ${cmd}`)
    return
  }
  try {
    const result = await pubsub.publish(topic, Uint8Array.from(Buffer.from(arg, 'hex')))
    out(`PUBLISHED ${result.recipients.length}`)
  } catch (err) {
    out(`PUBERR ${String(err?.message ?? err).replace(/\s+/g, ' ')}`)
  }
})
commands.on('close', () => {
  finish(wanted === 0 || received >= wanted ? 0 : 1)
})
