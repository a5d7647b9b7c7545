// @ts-check
import tseslint from 'typescript-eslint'

const folders = ['core', 'store', 'overlay', 'images', 'transfer', 'hypervisor', 'data', 'market', 'deploy', 'node', 'api', 'web', 'cli']
/**
 * What each folder may import from (docs/architecture.md: core ← store ← {overlay, transfer,
 * hypervisor, data} ← images ← node ← {api, cli}); market/ (the bank and auctions), deploy/
 * (descriptions of whole deployments), web/ (the dashboard, which the API serves).
 */
const allowed = {
  core: [],
  store: ['core'],
  overlay: ['core', 'store'],
  transfer: ['core', 'store'],
  hypervisor: ['core', 'store'],
  data: ['core', 'store'],
  images: ['core', 'store', 'overlay', 'transfer'],
  market: ['core', 'store', 'overlay'],
  deploy: ['core', 'store'],
  node: ['core', 'store', 'overlay', 'images', 'hypervisor', 'transfer', 'data', 'market', 'deploy'],
  api: ['core', 'store', 'images', 'node', 'web'],
  web: ['core'],
  cli: ['core', 'store', 'images', 'deploy', 'api', 'node'],
}

export default tseslint.config(
  { ignores: ['node_modules/**', '.cache/**', 'bench/results/**', 'dist/**'] },
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/explicit-function-return-type': ['error', { allowExpressions: true, allowTypedFunctionExpressions: true }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      // A key left out by destructuring the rest (`const { grant, ...view } = x`) is how an object is copied without it.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/no-empty-function': 'off',
      '@typescript-eslint/require-await': 'off',
      'no-console': 'error',
    },
  },
  ...folders.map(folder => ({
    files: [`src/${folder}/**/*.ts`],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          ...folders.filter(f => f !== folder && !allowed[folder].includes(f)).map(f => ({
            group: [`../${f}/*`, `../../${f}/*`],
            message: `src/${folder} may not depend on src/${f} (see docs/architecture.md)`,
          })),
          ...allowed[folder].map(f => ({
            group: [`../${f}/*`, `!../${f}/index.ts`, `../../${f}/*`, `!../../${f}/index.ts`],
            message: `import src/${f} through its index.ts`,
          })),
        ],
      }],
    },
  })),
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
  {
    // The dashboard's browser modules: plain JavaScript, checked without types.
    files: ['src/web/ui/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: Object.fromEntries(['window', 'document', 'fetch', 'crypto', 'indexedDB', 'setInterval', 'clearInterval', 'setTimeout', 'TextEncoder', 'TextDecoder', 'TextDecoderStream', 'URLSearchParams', 'AbortController', 'FileReader', 'atob', 'btoa', 'console'].map(g => [g, 'readonly'])),
    },
    rules: { ...tseslint.configs.disableTypeChecked.rules, '@typescript-eslint/explicit-function-return-type': 'off', 'no-undef': 'error' },
  },
  {
    // Tests read JSON from real processes (typed `any`) and node:test's describe/it return promises by design.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      'no-console': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-floating-promises': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
)
