'use strict'
// Aedes (npm, in-memory persistence) on 127.0.0.1:PORT for the broker interop tests: `node broker.js PORT`.
// Prints "listening PORT" once the listener is up; SIGTERM/SIGINT close it. Started by tests/interop/processes.py.
const net = require('net')
const aedes = require('aedes')()

const port = Number(process.argv[2])
const server = net.createServer(aedes.handle)
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`))
aedes.on('clientError', (client, err) => console.error(`client error id=${client && client.id} ${err.message}`))
aedes.on('connectionError', (client, err) => console.error(`connection error ${err.message}`))
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => aedes.close(() => process.exit(0))))
}
