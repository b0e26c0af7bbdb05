/**
 * The one symbol table of the C surface (`bindings/src/ffi.rs`), with the C type
 * of every parameter beside it. Every function returns an `int32_t`: 0 (OK), 1 (EMPTY: nothing
 * ready yet) or a negative library status.
 *
 * @module
 */

export const symbols = {
  // int32_t shmcall_last_error(uint8_t* buf, size_t cap)
  shmcall_last_error: { parameters: ["buffer", "usize"], result: "i32" },
  // int32_t shmcall_protocol_version(void)
  shmcall_protocol_version: { parameters: [], result: "i32" },
  // int32_t shmcall_status_name(int32_t code, uint8_t* buf, size_t cap)
  shmcall_status_name: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_socket_dir(const uint8_t* dir, size_t dir_len, uint8_t* buf, size_t cap)
  shmcall_socket_dir: { parameters: ["buffer", "usize", "buffer", "usize"], result: "i32" },

  // int32_t shmcall_constant(const uint8_t* name, size_t name_len, int64_t* out)
  shmcall_constant: { parameters: ["buffer", "usize", "buffer"], result: "i32" },

  shmcall_client_connect: {
    parameters: [
      "buffer", // const uint8_t* ic_id
      "usize", //  size_t ic_id_len
      "buffer", // const uint8_t* dir (may be empty)
      "usize", //  size_t dir_len
      "u64", //    uint64_t spin_ns (UINT64_MAX: default)
      "u32", //    uint32_t large_output (0: the default geometry)
      "u64", //    uint64_t id (names the client in hub events: its end may come as CONNECTED)
      "buffer", // uint32_t* out (the client's handle, when connected at once)
    ],
    result: "i32",
  },
  // int32_t shmcall_client_segment(uint32_t client, uint8_t** base, size_t* len, uint32_t* out)
  shmcall_client_segment: {
    parameters: ["u32", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_client_free(uint32_t client)
  shmcall_client_free: { parameters: ["u32"], result: "i32" },
  shmcall_client_begin_at: {
    parameters: [
      "u32", //     uint32_t client
      "u32", //     uint32_t code
      "u32", //     uint32_t input_len
      "u32", //     uint32_t output_cap
      "u32", //     uint32_t mode (0 default, 1 inline, 2 worker, 4 counters)
      "buffer", //  uint32_t* ticket (a handle)
      "buffer", //  uint32_t offsets[3]: input, output, slot (UINT32_MAX: the backup path)
    ],
    result: "i32",
  },
  // int32_t shmcall_ticket_areas(uint32_t ticket, uint8_t** input, uint8_t** output)
  shmcall_ticket_areas: {
    parameters: ["u32", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_client_call(uint32_t client, uint32_t ticket, double timeout_ms, int32_t* status, uint32_t* length)
  shmcall_client_call: {
    parameters: ["u32", "u32", "f64", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_client_submit(uint32_t client, uint32_t ticket, uint64_t token)
  shmcall_client_submit: {
    parameters: ["u32", "u32", "u64"],
    result: "i32",
  },
  // int32_t shmcall_client_withdraw(uint32_t client, uint32_t slot): 1 withdrawn, 0 not
  shmcall_client_withdraw: { parameters: ["u32", "u32"], result: "i32" },
  // int32_t shmcall_server_lane_layout(uint32_t server, uint64_t conn, uint32_t* out, size_t len)
  shmcall_server_lane_layout: { parameters: ["u32", "u64", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_server_lane_segment(uint32_t server, uint64_t conn, uint8_t** base, size_t* len, uint32_t* out)
  shmcall_server_lane_segment: {
    parameters: ["u32", "u64", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_server_lane_wake(uint32_t server, uint64_t conn)
  shmcall_server_lane_wake: { parameters: ["u32", "u64"], result: "i32" },
  // int32_t shmcall_server_lane_violation(uint32_t server, uint64_t conn, const uint8_t* why, size_t len)
  shmcall_server_lane_violation: {
    parameters: ["u32", "u64", "buffer", "usize"],
    result: "i32",
  },
  // int32_t shmcall_server_lane_hold(uint32_t server, uint64_t conn)
  shmcall_server_lane_hold: { parameters: ["u32", "u64"], result: "i32" },
  // int32_t shmcall_server_lane_release(uint32_t server, uint64_t conn)
  shmcall_server_lane_release: { parameters: ["u32", "u64"], result: "i32" },
  // int32_t shmcall_server_lane_drained(uint32_t server, uint64_t conn)
  shmcall_server_lane_drained: { parameters: ["u32", "u64"], result: "i32" },
  // int32_t shmcall_server_lane_count(uint32_t server, const double* report, size_t len)
  shmcall_server_lane_count: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // double shmcall_now_ns(void)
  shmcall_now_ns: { parameters: [], result: "f64" },
  // int32_t shmcall_client_lend(uint32_t client, uint32_t* out, size_t len)
  shmcall_client_lend: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_client_lane_wake(uint32_t client)
  shmcall_client_lane_wake: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_client_protocol_minor(uint32_t client): the minor, or a failure
  shmcall_client_protocol_minor: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_client_lane_quiet(uint32_t client)
  shmcall_client_lane_quiet: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_client_lane_activate(uint32_t client)
  shmcall_client_lane_activate: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_client_lane_wait(uint32_t client, double timeout_ms): 1 an answer, 0 none
  shmcall_client_lane_wait: { parameters: ["u32", "f64"], result: "i32" },
  // int32_t shmcall_client_lane_violation(uint32_t client, const uint8_t* why, size_t len)
  shmcall_client_lane_violation: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_client_lane_count(uint32_t client, const double* report, size_t len)
  shmcall_client_lane_count: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_client_stats(uint32_t client, double* out, size_t len)
  shmcall_client_stats: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_ticket_answer(uint32_t ticket, int32_t* status, uint32_t* length, uint8_t** output)
  shmcall_ticket_answer: {
    parameters: ["u32", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_ticket_write_input(uint32_t ticket, const uint8_t* src, size_t len)
  shmcall_ticket_write_input: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_ticket_read_output(uint32_t ticket, uint8_t* dst, size_t cap)
  shmcall_ticket_read_output: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_ticket_free(uint32_t ticket)
  shmcall_ticket_free: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_segment_release(uint32_t segment)
  shmcall_segment_release: { parameters: ["u32"], result: "i32" },

  shmcall_server_serve: {
    parameters: [
      "buffer", // const uint8_t* ic_id
      "usize", //  size_t ic_id_len
      "buffer", // const uint8_t* dir (may be empty)
      "usize", //  size_t dir_len
      "u64", //    uint64_t spin_ns (UINT64_MAX: default)
      "u64", //    uint64_t id (names the server in hub events)
      "u32", //    uint32_t asks_open (1: a client waits for JavaScript's answer to its open)
      "buffer", // uint32_t* out (the server's handle)
    ],
    result: "i32",
  },
  // int32_t shmcall_server_opened(uint32_t server, uint64_t connection, int32_t status, const uint8_t* reason, size_t reason_len)
  shmcall_server_opened: {
    parameters: ["u32", "u64", "i32", "buffer", "usize"],
    result: "i32",
  },
  // int32_t shmcall_server_stats(uint32_t server, double* out, size_t len)
  shmcall_server_stats: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_server_note(uint32_t server, uint32_t workers, uint32_t quiescing)
  shmcall_server_note: { parameters: ["u32", "u32", "u32"], result: "i32" },
  // int32_t shmcall_command_take(uint32_t command): 1 taken, 0 withdrawn by its client
  shmcall_command_take: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_command_finish(uint32_t command, int32_t status, uint32_t length,
  //                                const uint8_t* output, uint32_t output_len)
  shmcall_command_finish: {
    parameters: ["u32", "i32", "u32", "buffer", "u32"],
    result: "i32",
  },
  // int32_t shmcall_command_segment(uint32_t command, uint8_t** base, size_t* len, uint32_t* out)
  shmcall_command_segment: {
    parameters: ["u32", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_command_read_input(uint32_t command, uint8_t* dst, size_t cap)
  shmcall_command_read_input: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_server_free(uint32_t server)
  shmcall_server_free: { parameters: ["u32"], result: "i32" },

  // int32_t shmcall_queue_serve(const uint8_t* queue_id, size_t len, const uint8_t* dir,
  //                             size_t dir_len, uint32_t* out)
  shmcall_queue_serve: {
    parameters: ["buffer", "usize", "buffer", "usize", "buffer"],
    result: "i32",
  },
  // int32_t shmcall_queue_stats(uint32_t queue, double* out, size_t len)
  shmcall_queue_stats: { parameters: ["u32", "buffer", "usize"], result: "i32" },
  // int32_t shmcall_queue_free(uint32_t queue)
  shmcall_queue_free: { parameters: ["u32"], result: "i32" },

  // int32_t shmcall_hub_claim(void): this thread drains the hub (one JavaScript thread);
  // returns the doorbells installed so far, as shmcall_hub_bells
  shmcall_hub_claim: { parameters: [], result: "i32" },
  // int32_t shmcall_hub_bells(void): how many doorbells were installed so far
  shmcall_hub_bells: { parameters: [], result: "i32" },
  // int32_t shmcall_hub_unclaim(void): this thread has no client or server left
  shmcall_hub_unclaim: { parameters: [], result: "i32" },
  // uint64_t shmcall_hub_new_id(void): an id unique in the process
  shmcall_hub_new_id: { parameters: [], result: "u64" },
  // int32_t shmcall_hub_next(HubEvent* event)
  shmcall_hub_next: { parameters: ["buffer"], result: "i32" },
  // int32_t shmcall_server_pool(uint32_t server, uint32_t* out)
  shmcall_server_pool: { parameters: ["u32", "buffer"], result: "i32" },
  // int32_t shmcall_pool_free(uint32_t pool)
  shmcall_pool_free: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_pool_take(uint32_t pool, uint32_t worker, uint64_t spin_ns, uint64_t wait_ns,
  //                           HubEvent* event): a synchronous wait of the worker's own thread
  shmcall_pool_take: { parameters: ["u32", "u32", "u64", "u64", "buffer"], result: "i32" },
  // int32_t shmcall_pool_bury(uint32_t pool, uint32_t worker, int32_t status)
  shmcall_pool_bury: { parameters: ["u32", "u32", "i32"], result: "i32" },
  // int32_t shmcall_pool_poked(uint32_t pool)
  shmcall_pool_poked: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_pool_in_progress(uint32_t pool)
  shmcall_pool_in_progress: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_hub_drain(uint32_t budget_ns): a drain begins
  shmcall_hub_drain: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_hub_spent(void): 1 once the drain's budget is spent
  shmcall_hub_spent: { parameters: [], result: "i32" },
  // int32_t shmcall_hub_idle(uint32_t wait_ns): polls the connections, then arms them:
  // 1 idle, 0 events, 2 events after the budget
  shmcall_hub_idle: { parameters: ["u32"], result: "i32" },
  // int32_t shmcall_hub_wait(uint32_t timeout_ns), the fallback doorbell: off the JS thread
  shmcall_hub_wait: { parameters: ["u32"], result: "i32", nonblocking: true },
  // int32_t shmcall_hub_interrupt(void)
  shmcall_hub_interrupt: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's symbols. */
export type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
