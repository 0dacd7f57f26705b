// What the js test peers share: the libp2p stack the Python node speaks (TCP, Noise, Yamux, identify, gossipsub
// with StrictSign and a 1 s heartbeat, the gossipsub default and the Python node's) and the Node 20 polyfill it
// needs. Import it before anything of libp2p: it installs the polyfill, then loads libp2p.

// Node 20 lacks Promise.withResolvers (Node >= 22), which a transitive dependency of libp2p 2.x (it-queue, used
// by mortice for the peer store locks) calls. Define it before libp2p is loaded.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { noise } = await import('@chainsafe/libp2p-noise')
const { gossipsub } = await import('@chainsafe/libp2p-gossipsub')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { tcp } = await import('@libp2p/tcp')
const { multiaddr } = await import('@multiformats/multiaddr')
const { createLibp2p } = await import('libp2p')

export { multiaddr }

// A started libp2p node with gossipsub under services.pubsub. `listen`: addresses to listen on (none: dial only);
// `gossip`: gossipsub options on top of the shared ones (e.g. mesh degrees).
export async function createGossipPeer ({ listen = [], gossip = {} } = {}) {
  return createLibp2p({
    ...(listen.length ? { addresses: { listen } } : {}),
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        heartbeatInterval: 1000,
        ...gossip
      })
    }
  })
}
