import { raw } from 'hono/html'
import type { Child, FC, PropsWithChildren } from 'hono/jsx'
import type { Session } from './session.js'

/** Asset URLs carry a hash of their content, so they are cached for a year and never stale. */
export type AssetUrls = { css: string; js: string; uplotJs: string; uplotCss: string }

export type PageContext = {
  session: Session
  assets: AssetUrls
  /** The path of the page (to mark its nav entry). */
  path: string
}

const NAV = [
  ['/', 'Inbox'],
  ['/accounts', 'Accounts'],
  ['/rules', 'Rules'],
  ['/funnel', 'Funnel'],
  ['/webhooks', 'Webhooks'],
  ['/events', 'Events'],
] as const

const current = (path: string, href: string) => (href === '/' ? path === '/' : path === href || path.startsWith(`${href}/`))

/** The one layout of every signed-in page: the nav, who is signed in, the page. */
export const Layout: FC<PropsWithChildren<{ ctx: PageContext; title: string; charts?: boolean }>> = ({ ctx, title, charts, children }) => (
  <>
  {raw('<!DOCTYPE html>')}
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{`${title} · signalbox`}</title>
      <link rel="stylesheet" href={ctx.assets.css} />
      {charts ? <link rel="stylesheet" href={ctx.assets.uplotCss} /> : null}
      {charts ? <script src={ctx.assets.uplotJs} defer /> : null}
      <script src={ctx.assets.js} defer />
    </head>
    <body data-role={ctx.session.role}>
      <header class="top">
        <a class="brand" href="/">
          signalbox
        </a>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([href, label]) => (
              <li>
                <a href={href} aria-current={current(ctx.path, href) ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          {ctx.session.role === 'read' ? <span class="pill muted" title="A read token: you can see everything and change nothing">Viewer</span> : <span class="pill">Admin</span>}
          <form method="post" action="/logout">
            <CsrfField session={ctx.session} />
            <button type="submit" class="link">
              Sign out
            </button>
          </form>
        </div>
      </header>
      <main id="main">{children}</main>
    </body>
  </html>
  </>
)

/** The hidden field every form that changes something carries. */
export const CsrfField: FC<{ session: Session }> = ({ session }) => <input type="hidden" name="_csrf" value={session.csrf} />

export const PageHeader: FC<PropsWithChildren<{ title: Child; subtitle?: Child }>> = ({ title, subtitle, children }) => (
  <div class="page-header">
    <div>
      <h1>{title}</h1>
      {subtitle ? <p class="subtitle">{subtitle}</p> : null}
    </div>
    {children ? <div class="actions">{children}</div> : null}
  </div>
)

/** A message after a form: what happened, or what went wrong. */
export const Flash: FC<{ kind: 'ok' | 'error'; children: Child }> = ({ kind, children }) => (
  <div class={`flash ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
    {children}
  </div>
)

/** Pages outside the session (sign-in, errors before sign-in). */
export const BareLayout: FC<PropsWithChildren<{ title: string; css: string }>> = ({ title, css, children }) => (
  <>
  {raw('<!DOCTYPE html>')}
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{`${title} · signalbox`}</title>
      <link rel="stylesheet" href={css} />
    </head>
    <body class="bare">
      <main id="main">{children}</main>
    </body>
  </html>
  </>
)
