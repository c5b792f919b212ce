#!/usr/bin/env node
// The `signalbox` command: runs src/cli.ts through tsx (resolved from this package, wherever the
// command is run from), so the CLI needs no build step.
import { register } from 'tsx/esm/api'

register()
await import('../src/cli.ts')
