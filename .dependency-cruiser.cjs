// Architecture rules, checked by `npm run check:deps` (part of .ci/run).
// Core code (everything in src/ outside an adapter folder) must never import an
// adapter or a driver: adapters depend on the core, never the other way round.
const ADAPTER = '^src/.+/(memory|sqlite|postgres|rabbitmq|redis)/';
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Import cycles make load order fragile and hide layering mistakes.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'core-imports-no-adapter',
      severity: 'error',
      comment: 'Core code must not import an adapter folder.',
      from: { path: '^src/', pathNot: ADAPTER },
      to: { path: ADAPTER },
    },
    {
      name: 'core-imports-no-driver',
      severity: 'error',
      comment: 'Drivers are loaded only by the adapter that needs them.',
      from: { path: '^src/', pathNot: ADAPTER },
      to: { path: 'node_modules/(better-sqlite3|pg|pg-.*|amqplib|ioredis)/' },
    },
    {
      name: 'moim-uses-the-public-api',
      severity: 'error',
      comment: 'moim is built only on the published package (imports of "sinho", "sinho/sqlite", ...), never on library internals.',
      from: { path: '^apps/moim/' },
      to: { path: '^src/' },
    },
    {
      name: 'moim-member-module-does-not-know-families',
      severity: 'error',
      comment: 'The member module publishes facts only; the family module reacts to them.',
      from: { path: '^apps/moim/src/domain/member' },
      to: { path: 'family' },
    },
    {
      name: 'adapters-do-not-import-each-other',
      severity: 'error',
      from: { path: '^src/log/(memory|sqlite|postgres)/' },
      to: { path: '^src/log/(memory|sqlite|postgres)/', pathNot: '^src/log/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
