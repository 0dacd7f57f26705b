// A hostile js-libp2p peer for the flood test (tests/fault/test_flood.py): it joins the offer topic of a node and
// publishes bad offers as fast as it can.
//
// Usage: node flooder.mjs <multiaddr of the target, with /p2p/<id>> <topic> <payload file> <seconds>
//
// <payload file> holds one hex message per line (e.g. offers signed by unregistered keys, offers with broken
// signatures); the flooder cycles through them and mixes in random garbage, each publish a new gossip message.
// Standard libp2p only (TCP, Noise, Yamux, identify, gossipsub with StrictSign). When the target drops the
// connection it dials again at once, as an attacker would. Reports on stdout, one line each:
//   PEER <own peer id>          once started
//   READY                       once the target is in our mesh (or after 5 s: publishing starts regardless)
//   SENT <n> <connected 0|1>    every second: messages published so far and whether the target is connected
//   DROPPED <n>                 each time the target closed the connection (n-th time)
//   DONE <sent> <dropped>       after <seconds>, then exit 0 (exit 2 on a startup error)

import { Buffer } from 'node:buffer'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createGossipPeer, multiaddr } from './peer.mjs'

const [addrArg, topic, payloadFile, secondsArg = '10'] = process.argv.slice(2)
if (!addrArg || !topic || !payloadFile) {
  process.stderr.write('usage: node flooder.mjs <multiaddr/p2p/id> <topic> <payload file> <seconds>\n')
  process.exit(2)
}
const payloads = readFileSync(payloadFile, 'utf8').split('\n').filter(Boolean)
  .map((h) => Uint8Array.from(Buffer.from(h.trim(), 'hex')))
const seconds = Number.parseFloat(secondsArg)
const remote = multiaddr(addrArg)
const remotePeer = remote.getPeerId()
const out = (line) => process.stdout.write(`${line}\n`)
const log = (line) => process.stderr.write(`[flooder] ${line}\n`)

const node = await createGossipPeer()
const pubsub = node.services.pubsub
let sent = 0
let dropped = 0
let connected = false
let stopping = false

node.addEventListener('peer:disconnect', (evt) => {
  if (evt.detail.toString() !== remotePeer) return
  connected = false
  dropped += 1
  out(`DROPPED ${dropped}`)
})
node.addEventListener('peer:connect', (evt) => {
  if (evt.detail.toString() === remotePeer) connected = true
})

async function dial () {
  while (!stopping && !connected) {
    try {
      await node.dial(remote)
      connected = true
    } catch (err) {
      log(`dial failed: ${err?.message ?? err}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
}

out(`PEER ${node.peerId.toString()}`)
pubsub.subscribe(topic)
try {
  await node.dial(remote)
  connected = true
} catch (err) {
  log(`dial ${addrArg} failed: ${err?.stack ?? err}`)
  process.exit(2)
}
await new Promise((resolve) => {
  const started = Date.now()
  const check = () => {
    if (pubsub.getMeshPeers(topic).includes(remotePeer) || Date.now() - started > 5000) {
      pubsub.removeEventListener('gossipsub:heartbeat', check)
      resolve()
    }
  }
  pubsub.addEventListener('gossipsub:heartbeat', check)
  check()
})
out('READY')

const ticker = setInterval(() => out(`SENT ${sent} ${connected ? 1 : 0}`), 1000)
const endAt = Date.now() + seconds * 1000
let i = 0
while (Date.now() < endAt) {
  if (!connected) {
    await dial()
    continue
  }
  const batch = []
  for (let k = 0; k < 32; k++) {
    i += 1
    const data = i % 4 === 0 || payloads.length === 0 ? randomBytes(200 + (i % 300)) : payloads[i % payloads.length]
    batch.push(pubsub.publish(topic, data).then(() => { sent += 1 }, () => {}))
  }
  await Promise.all(batch)
  await new Promise((resolve) => setImmediate(resolve))
}
stopping = true
clearInterval(ticker)
out(`DONE ${sent} ${dropped}`)
try {
  await Promise.race([node.stop(), new Promise((resolve) => setTimeout(resolve, 2000))])
} catch {}
process.exit(0)
