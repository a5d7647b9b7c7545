// The user's key, kept by the browser in IndexedDB: its private half cannot be read back out
// (WebCrypto, non-extractable), and it never leaves the browser; only signatures do.

const DB = 'xenos'
const STORE = 'keys'
const SLOT = 'user'

function database () {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1)
    open.onupgradeneeded = () => { open.result.createObjectStore(STORE) }
    open.onsuccess = () => { resolve(open.result) }
    open.onerror = () => { reject(open.error) }
  })
}

async function request (mode, act) {
  const db = await database()
  return await new Promise((resolve, reject) => {
    const r = act(db.transaction(STORE, mode).objectStore(STORE))
    r.onsuccess = () => { resolve(r.result) }
    r.onerror = () => { reject(r.error) }
  })
}

/** base64url without padding, as owner ids and signatures are written. */
export function base64url (bytes) {
  let s = ''
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** The key kept in this browser, as { id, privateKey }, or undefined. */
export async function loadKey () {
  return await request('readonly', s => s.get(SLOT))
}

async function keep (key) {
  await request('readwrite', s => s.put(key, SLOT))
  return key
}

/** A new key, made and kept in this browser. */
export async function generateKey () {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])
  const id = base64url(await crypto.subtle.exportKey('raw', pair.publicKey))
  return await keep({ id, privateKey: pair.privateKey })
}

/** The key of a PEM file (PKCS#8, as `xenos` keeps it in ~/.config/xenos/user.pem), kept in this browser. */
export async function importPem (pem) {
  const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, '')
  if (body === '') throw new Error('not a PEM private key')
  const der = Uint8Array.from(atob(body), c => c.charCodeAt(0))
  // Read once as extractable to learn the public half, then kept as a key that cannot be read out.
  const readable = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, true, ['sign'])
  const jwk = await crypto.subtle.exportKey('jwk', readable)
  const privateKey = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign'])
  return await keep({ id: jwk.x, privateKey })
}

export async function forgetKey () {
  await request('readwrite', s => s.delete(SLOT))
}
