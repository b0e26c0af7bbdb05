/**
 * A would-be pool handler module that exports no `exec`: `serve` must refuse it.
 *
 * @module
 */

export function run(): void {}
