import { defineConfig } from 'vite';

// The Rust server embeds dist/ by fixed names, so the build emits exactly
// index.html, assets/console.js and assets/console.css: no hashes, no chunks.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    cssCodeSplit: false,
    // Anything an import references (icons in the MapLibre stylesheet) is inlined as a
    // data URI, so nothing but the three files is ever requested.
    assetsInlineLimit: 100_000_000,
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: 'assets/console.js',
        chunkFileNames: 'assets/console.js',
        assetFileNames: (asset) => (asset.names?.some((n) => n.endsWith('.css')) ? 'assets/console.css' : 'assets/[name][extname]'),
        inlineDynamicImports: true,
      },
    },
  },
  server: {
    // `npm run dev` against a node on 8080.
    proxy: { '/api': { target: 'http://127.0.0.1:8080', changeOrigin: false }, '/healthz': 'http://127.0.0.1:8080' },
  },
});
