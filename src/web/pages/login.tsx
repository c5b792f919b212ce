import type { FC } from 'hono/jsx'
import { BareLayout } from '../layout.js'

/** The sign-in form: one field, `token` (the admin token or a read token). */
export const LoginPage: FC<{ css: string; error?: string }> = ({ css, error }) => (
  <BareLayout title="Sign in" css={css}>
    <div class="login">
      <h1 class="brand">signalbox</h1>
      <p class="subtitle">Product signals for sales and customer success.</p>
      <form method="post" action="/login" class="card">
        {error ? (
          <p class="flash error" role="alert">
            {error}
          </p>
        ) : null}
        <label for="token">Token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" required autofocus spellcheck={false} />
        <p class="hint">
          The admin token, or a read token to look without changing anything. <code>npm start</code> printed where they are kept
          (<code>data/credentials.json</code> unless set in the environment).
        </p>
        <button type="submit" class="primary wide">
          Sign in
        </button>
      </form>
    </div>
  </BareLayout>
)
