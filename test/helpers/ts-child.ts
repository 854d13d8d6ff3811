/** Node arguments for a child process that runs the project's TypeScript sources (see ts-hooks.mjs). */
import { pathToFileURL } from 'node:url';

const HOOKS = pathToFileURL(new URL('./ts-hooks.mjs', import.meta.url).pathname).href;

export function tsNodeArgs(): string[] {
  const register = `import { register } from 'node:module'; register(${JSON.stringify(HOOKS)});`;
  return ['--import', `data:text/javascript,${encodeURIComponent(register)}`];
}
