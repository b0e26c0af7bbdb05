/**
 * Opens the core library before any test starts. The library is a process-lifetime resource
 * (unloading a `.so` whose threads may still run would crash), so it must not count as
 * a resource leaked by whichever test happens to use it first.
 *
 * @module
 */

import { library } from "../ffi/load.ts";

library();
