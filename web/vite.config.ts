// Builds the console into dist/ with relative asset URLs, so the edge can serve it under any
// MESH_CONSOLE_PATH. No asset is loaded from anywhere but the edge.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, assetsInlineLimit: 0, sourcemap: false },
});
