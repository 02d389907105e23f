/* Shared by the libFuzzer targets in test/fuzz/: a "server" thread that
 * plays the fuzz input as everything the server says, and checks on what
 * nbdfs shows a user. Header-only: each target is one .c file. */
#ifndef NBDFS_FUZZ_COMMON_H
#define NBDFS_FUZZ_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/* Report a broken invariant and crash so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf (stderr, "fuzz check failed: %s (%s:%d)\n", #cond,         \
               __FILE__, __LINE__);                                      \
      abort ();                                                          \
    }                                                                    \
  } while (0)

/* Server text reaches the terminal only escaped: no control bytes, valid
 * UTF-8 ("Bad input" rules; names.h nbdc_escape_text). */
static inline void
fuzz_check_printable (const char *s)
{
  if (s == NULL)
    return;
  FUZZ_CHECK (g_utf8_validate (s, -1, NULL));
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    FUZZ_CHECK (*p >= 0x20 && *p != 0x7f);
}

/* The server: writes the whole input, half-closes, then reads (and drops)
 * whatever the client sends until the client hangs up, so the client never
 * blocks on a full socket buffer and always sees EOF after the input. */
typedef struct {
  int fd;                     /* server end; -1: accept on listen_fd */
  int listen_fd;
  const uint8_t *data;
  size_t size;
  /* Optional: read this many bytes of client requests before replying
   * (so slot numbers, hence cookies, are deterministic). */
  size_t wait_for;
  GThread *thread;
} FuzzServer;

static gpointer
fuzz_server_run (gpointer p)
{
  FuzzServer *s = p;
  if (s->fd < 0) {
    s->fd = accept (s->listen_fd, NULL, NULL);
    if (s->fd < 0)
      return NULL;
  }
  char buf[65536];
  size_t got = 0;
  while (got < s->wait_for) {
    ssize_t r = recv (s->fd, buf, MIN (sizeof buf, s->wait_for - got), 0);
    if (r <= 0)
      break;
    got += r;
  }
  size_t off = 0;
  while (off < s->size) {
    ssize_t r = send (s->fd, s->data + off, s->size - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    off += r;
  }
  shutdown (s->fd, SHUT_WR);
  while (recv (s->fd, buf, sizeof buf, 0) > 0)
    ;
  return NULL;
}

static inline void
fuzz_server_start (FuzzServer *s)
{
  s->thread = g_thread_new ("fuzz-server", fuzz_server_run, s);
}

static inline void
fuzz_server_join (FuzzServer *s)
{
  g_thread_join (s->thread);
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
}

/* Quiet: warnings about hostile input are expected by the thousand. Set
 * NBDFS_FUZZ_VERBOSE=1 to see them (and G_MESSAGES_DEBUG=all for traces). */
static GLogWriterOutput
fuzz_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n,
                 gpointer data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return g_log_writer_default (level, fields, n, data);
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    return g_log_writer_default (level, fields, n, data);
  return G_LOG_WRITER_HANDLED;
}

static inline void
fuzz_init_logging (void)
{
  g_log_set_writer_func (fuzz_log_writer, NULL, NULL);
  /* g_critical (a g_return_if_fail on server input) is a bug: crash. */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
}

#endif
