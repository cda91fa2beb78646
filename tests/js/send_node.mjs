// Segment's analytics-node, pointed at the gateway with `host`: identify, track, flush.
// Usage: node send_node.mjs <host> <writeKey>
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, maxRetries: 0, flushAt: 2 })
const errors = []
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.message || err))))
analytics.identify({ userId: 'node-user', anonymousId: 'node-anon', traits: { email: 'node@example.com' } })
analytics.track({ userId: 'node-user', anonymousId: 'node-anon', event: 'Node Event', properties: { n: 1 } })
await analytics.closeAndFlush({ timeout: 10000 })
if (errors.length) {
  console.error(errors.join('\n'))
  process.exit(1)
}
console.log('sent')
