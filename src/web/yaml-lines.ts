import { isNode, LineCounter, parseDocument } from 'yaml'

/**
 * The line of a YAML document that a validation error's path (`when.all.0.window`) points at: the
 * node itself, or the nearest existing parent when the path names something missing. The API's
 * errors name paths; people editing YAML think in lines.
 */
export function lineOfPath(source: string, path: string): number | undefined {
  const lines = new LineCounter()
  const doc = parseDocument(source, { lineCounter: lines, keepSourceTokens: false })
  if (doc.errors.length) {
    const m = /^\(line (\d+)/.exec(path)
    return m ? Number(m[1]) : undefined
  }
  const parts = path
    .split('.')
    .filter((p) => p && p !== '(root)')
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p))
  for (let n = parts.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(parts.slice(0, n), true)
    if (isNode(node) && node.range) return lines.linePos(node.range[0]).line
    // A key whose value is a scalar in a flow map is reachable through its pair's key.
  }
  return undefined
}
