"""The broker interop suite's parts: the matrix of brokers, protocols, checks and limits, the third-party brokers
started as processes (Aedes from npm), and the generator of the interop table in deploy/brokers.md."""
