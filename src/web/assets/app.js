// signalbox workspace: progressive enhancement only. Every page works without this script;
// it adds the live inbox, the live events debugger and the charts (uPlot).
;(() => {
  'use strict'

  const html = (text) => {
    const t = document.createElement('template')
    t.innerHTML = text.trim()
    return [...t.content.children]
  }

  // ---- Live inbox: the signal stream says something changed; the server renders the rows.
  const inbox = document.querySelector('[data-live-inbox]')
  if (inbox && 'EventSource' in window) {
    const status = document.querySelector('[data-live-status]')
    const rowsUrl = inbox.getAttribute('data-live-inbox')
    const sep = rowsUrl.includes('?') ? '&' : '?'
    let busy = Promise.resolve()
    const insertNewer = () =>
      (busy = busy.then(async () => {
        const newest = inbox.getAttribute('data-newest')
        const res = await fetch(`${rowsUrl}${newest ? `${sep}after=${newest}` : ''}`, { headers: { accept: 'text/html' } })
        if (!res.ok) return
        const rows = html(await res.text())
        if (!rows.length) return
        for (const row of rows.reverse()) {
          document.getElementById(row.id)?.remove()
          row.classList.add('fresh')
          inbox.prepend(row)
        }
        inbox.setAttribute('data-newest', inbox.firstElementChild?.getAttribute('data-signal-id') ?? newest)
        document.querySelector('.empty')?.remove()
      }))
    const refresh = (id) =>
      (busy = busy.then(async () => {
        const el = document.getElementById(id)
        if (!el) return
        const res = await fetch(`${rowsUrl}${sep}ids=${id}`, { headers: { accept: 'text/html' } })
        if (!res.ok) return
        const [row] = html(await res.text())
        if (row) el.replaceWith(row)
      }))
    const source = new EventSource('/live/signals')
    source.addEventListener('open', () => {
      status?.classList.add('on')
      if (status) status.textContent = 'Live'
      insertNewer()
    })
    source.addEventListener('error', () => {
      status?.classList.remove('on')
      if (status) status.textContent = 'Reconnecting…'
    })
    source.addEventListener('signal.fired', () => insertNewer())
    source.addEventListener('signal.resolved', (e) => {
      try {
        refresh(JSON.parse(e.data).data.id)
      } catch {}
    })
  }

  // ---- Polled lists (the events debugger): newer rows are asked for every few seconds.
  for (const list of document.querySelectorAll('[data-poll]')) {
    const url = list.getAttribute('data-poll')
    const sep = url.includes('?') ? '&' : '?'
    const tick = async () => {
      const after = list.getAttribute('data-newest') ?? ''
      try {
        const res = await fetch(`${url}${sep}after=${encodeURIComponent(after)}`, { headers: { accept: 'text/html' } })
        if (res.ok) {
          const rows = html(await res.text())
          for (const row of rows.reverse()) {
            row.classList.add('fresh')
            list.prepend(row)
          }
          const first = list.querySelector('[data-cursor]')
          if (first) list.setAttribute('data-newest', first.getAttribute('data-cursor'))
          if (rows.length) list.closest('section')?.querySelector('.empty')?.remove()
        }
      } finally {
        setTimeout(tick, 2000)
      }
    }
    setTimeout(tick, 2000)
  }

  // ---- Charts
  const COLORS = ['#4338ca', '#0ea5e9', '#10b981', '#f59e0b']
  const dayToSec = (d) => Date.parse(`${d}T00:00:00Z`) / 1000

  function bandsPlugin(bands) {
    return {
      hooks: {
        drawClear: (u) => {
          const { ctx } = u
          ctx.save()
          for (const b of bands) {
            const x0 = u.valToPos(dayToSec(b.from) - 43200, 'x', true)
            const x1 = u.valToPos(dayToSec(b.to) + 43200, 'x', true)
            ctx.fillStyle = 'rgba(239, 68, 68, 0.10)'
            ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height)
          }
          ctx.restore()
        },
      },
    }
  }

  function draw(fig) {
    if (!window.uPlot) return
    const spec = JSON.parse(fig.getAttribute('data-chart'))
    const host = fig.querySelector('.chart-canvas') ?? fig
    const width = Math.max(host.clientWidth || fig.clientWidth, 100)
    const x = spec.x.map(dayToSec)
    const data = [x, ...spec.series.map((s) => s.values)]
    const spark = spec.type === 'spark'
    const bars = spec.type === 'bars'
    const hasRight = spec.series.some((s) => s.axis === 'right')
    const opts = {
      width: spark ? 120 : width,
      height: spark ? 28 : 240,
      legend: { show: !spark },
      cursor: spark ? { show: false } : { points: { size: 6 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] }, ...(hasRight ? { r: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } } : {}) },
      axes: spark
        ? [{ show: false }, { show: false }]
        : [
            { stroke: '#6b7280', grid: { stroke: '#f3f4f6' }, ticks: { stroke: '#e5e7eb' } },
            { stroke: '#6b7280', grid: { stroke: '#f3f4f6' }, ticks: { stroke: '#e5e7eb' }, size: 50 },
            ...(hasRight ? [{ scale: 'r', side: 1, stroke: '#0ea5e9', grid: { show: false }, size: 40 }] : []),
          ],
      series: [
        {},
        ...spec.series.map((s, i) => ({
          label: s.label,
          scale: s.axis === 'right' ? 'r' : 'y',
          stroke: COLORS[i % COLORS.length],
          width: spark ? 1.5 : 2,
          fill: bars ? `${COLORS[i % COLORS.length]}cc` : i === 0 ? `${COLORS[0]}14` : undefined,
          points: { show: false },
          ...(bars ? { paths: window.uPlot.paths.bars({ size: [0.7, 40] }) } : {}),
        })),
      ],
      plugins: spec.bands?.length ? [bandsPlugin(spec.bands)] : [],
    }
    host.textContent = ''
    const u = new window.uPlot(opts, data, host)
    fig.classList.add('chart-ready')
    fig.uplot = u
    if (!spark) new ResizeObserver(() => u.setSize({ width: Math.max(host.clientWidth, 100), height: 240 })).observe(host)
  }

  const drawAll = () => {
    for (const fig of document.querySelectorAll('[data-chart]')) {
      try {
        draw(fig)
      } catch (err) {
        console.error('chart', err)
      }
    }
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', drawAll)
  else drawAll()
})()
