// See package.json: chdb's loader treats this as "no native binding for this platform".
const err = new Error('chdb has no native build for this platform in this installation')
err.code = 'MODULE_NOT_FOUND'
throw err
