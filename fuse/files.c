/* nbdfs — which files the mount shows: one per export, with its name.
 *
 * File names (documented in the README, "FUSE mode"):
 *  - --name FILE wins (single export only), checked like any other name.
 *  - The default export (empty name) is "disk".
 *  - Otherwise the export name, made safe for one path component:
 *    '/' and control bytes (0x00-0x1f, 0x7f) become '_'; the names "." and
 *    ".." become "_." and "_.."; longer than NAME_MAX (255) bytes is cut
 *    (at a UTF-8 character boundary). With --all, a name that is already
 *    taken gets "-2", "-3"... appended.
 * Export names from NBD_OPT_LIST arrive escaped for printing (\xNN for
 * bytes that are not printable UTF-8); such exports are opened by the
 * escaped name, which only works where the two are the same.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "fuse/fs.h"
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* Cut S to at most MAX bytes without cutting a UTF-8 sequence in half:
 * back up over continuation bytes (10xxxxxx) to the start of the
 * character. */
static void
cut_utf8 (GString *s, size_t max)
{
  if (s->len <= max)
    return;
  size_t n = max;
  while (n > 0 && ((unsigned char) s->str[n] & 0xc0) == 0x80)
    n--;
  g_string_truncate (s, n);
}

char *
nbdfs_file_name_for_export (const char *export_name)
{
  if (export_name == NULL || export_name[0] == '\0')
    return g_strdup (NBDFS_DEFAULT_FILE_NAME);
  if (strcmp (export_name, ".") == 0 || strcmp (export_name, "..") == 0)
    return g_strconcat ("_", export_name, NULL);

  GString *s = g_string_new (NULL);
  for (const unsigned char *p = (const unsigned char *) export_name; *p; p++)
    g_string_append_c (s, (*p == '/' || *p < 0x20 || *p == 0x7f) ? '_' : *p);
  cut_utf8 (s, NAME_MAX);
  return g_string_free (s, FALSE);
}

static gboolean
check_user_name (const char *name, GError **error)
{
  if (name[0] == '\0' || strchr (name, '/') != NULL
      || strcmp (name, ".") == 0 || strcmp (name, "..") == 0
      || strlen (name) > NAME_MAX) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--name '%s': give a plain file name (no '/', not '.' or "
                 "'..', at most %d bytes)", name, NAME_MAX);
    return FALSE;
  }
  return TRUE;
}

NbdfsFile *
nbdfs_file_by_ino (NbdfsFs *fs, fuse_ino_t ino)
{
  if (ino < NBDFS_FIRST_FILE_INO
      || ino - NBDFS_FIRST_FILE_INO >= fs->files->len)
    return NULL;
  return g_ptr_array_index (fs->files, ino - NBDFS_FIRST_FILE_INO);
}

NbdfsFile *
nbdfs_file_for_io (fuse_req_t req, NbdfsFs *fs, fuse_ino_t ino)
{
  NbdfsFile *f = nbdfs_file_by_ino (fs, ino);
  if (f == NULL)
    fuse_reply_err (req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
  return f;
}

NbdfsFile *
nbdfs_file_by_name (NbdfsFs *fs, const char *name)
{
  for (guint i = 0; i < fs->files->len; i++) {
    NbdfsFile *f = g_ptr_array_index (fs->files, i);
    if (strcmp (f->name, name) == 0)
      return f;
  }
  return NULL;
}

static void
file_free (NbdfsFile *f)
{
  g_free (f->name);
  g_free (f->export_name);
  nbdc_export_clear (&f->exp);
  if (f->opens)
    g_hash_table_destroy (f->opens);
  g_free (f);
}

/* Opens one pool for EXPORT_NAME and appends its file called NAME. */
static gboolean
add_file (NbdfsFs *fs, const char *export_name, const char *name,
          GError **error)
{
  NbdcOptions opts = { 0 };
  nbdc_options_copy (&opts, fs->opts->nbd);
  g_free (opts.addr.export_name);
  opts.addr.export_name = g_strdup (export_name);

  NbdfsFile *f = g_new0 (NbdfsFile, 1);
  f->pool = nbdc_pool_open (&opts, fs->opts->pool, &f->exp, error);
  nbdc_options_clear (&opts);
  if (f->pool == NULL) {
    g_free (f);
    return FALSE;
  }
  f->ino = NBDFS_FIRST_FILE_INO + fs->files->len;
  /* Owns the descriptions: those still open when the session ends get
   * no release, and are freed with the table. */
  f->opens = g_hash_table_new_full (NULL, NULL, g_free, NULL);
  f->export_name = g_strdup (export_name);
  f->name = g_strdup (name);
  f->read_only = fs->opts->pool->read_only
    || (f->exp.eflags & NBD_FLAG_READ_ONLY) != 0;
  f->mode = S_IFREG | (f->read_only ? 0444 : 0644);
  f->uid = fs->uid;
  f->gid = fs->gid;
  f->atime = f->mtime = f->ctime = fs->root_time;
  f->allocated = -1;
  g_ptr_array_add (fs->files, f);

  g_autofree char *flags = nbdc_eflags_to_string (f->exp.eflags);
  g_debug ("file '%s': export '%s', %" G_GUINT64_FORMAT " bytes, "
           "%u connection(s), block sizes %u/%u/%u, flags %s%s",
           f->name, export_name, f->exp.size,
           nbdc_pool_connections (f->pool), f->exp.min_block,
           f->exp.pref_block, f->exp.max_block, flags,
           f->read_only ? " (read-only file)" : "");
  return TRUE;
}

gboolean
nbdfs_files_open (NbdfsFs *fs, GError **error)
{
  const NbdfsFuseOptions *o = fs->opts;

  fs->files = g_ptr_array_new ();
  if (!o->all) {
    g_autofree char *name = NULL;
    if (o->file_name) {
      if (!check_user_name (o->file_name, error))
        return FALSE;
      name = g_strdup (o->file_name);
    }
    else
      name = nbdfs_file_name_for_export (o->nbd->addr.export_name);
    return add_file (fs, o->nbd->addr.export_name, name, error);
  }

  if (o->file_name) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--name and --all do not go together: with --all each file "
                 "is named after its export");
    return FALSE;
  }
  g_autoptr (GPtrArray) entries = NULL;
  if (!nbdc_list_exports (o->nbd, &entries, error)) {
    g_prefix_error (error, "--all: ");
    return FALSE;
  }
  if (entries->len == 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_NO_SUCH_EXPORT,
                 "--all: the server lists no exports");
    return FALSE;
  }
  for (guint i = 0; i < entries->len; i++) {
    NbdExportEntry *e = g_ptr_array_index (entries, i);
    /* e->name is escaped for printing; the server must be asked for the
     * bytes it listed. A name with a NUL in it cannot be asked for at
     * all (NBD names are strings), so it is left out. */
    if (e->raw_name == NULL || strlen (e->raw_name) != e->raw_name_len) {
      g_warning ("--all: leaving out export '%s': its name contains a NUL "
                 "byte", e->name);
      continue;
    }
    g_autofree char *base = nbdfs_file_name_for_export (e->raw_name);
    g_autofree char *name = g_strdup (base);
    for (unsigned n = 2; nbdfs_file_by_name (fs, name) != NULL; n++) {
      /* The suffix must fit in NAME_MAX too: cut the base further. */
      g_autofree char *suffix = g_strdup_printf ("-%u", n);
      GString *s = g_string_new (base);
      cut_utf8 (s, NAME_MAX - strlen (suffix));
      g_string_append (s, suffix);
      g_free (name);
      name = g_string_free (s, FALSE);
    }
    if (!add_file (fs, e->raw_name, name, error)) {
      g_prefix_error (error, "--all: export '%s': ", e->name);
      return FALSE;
    }
  }
  return TRUE;
}

int
nbdfs_files_close (NbdfsFs *fs, gint64 deadline)
{
  int first = 0;

  if (fs->files == NULL)
    return 0;
  for (guint i = 0; i < fs->files->len; i++) {
    NbdfsFile *f = g_ptr_array_index (fs->files, i);
    /* Descriptions still open that were never told of a lost write
     * (errseq: they would get EIO at their next fsync or close, which
     * will not come now): the exit status says it for them. */
    unsigned untold = 0;
    g_mutex_lock (&fs->lock);
    GHashTableIter it;
    gpointer o;
    g_hash_table_iter_init (&it, f->opens);
    while (g_hash_table_iter_next (&it, &o, NULL))
      if (nbdc_pool_wb_err_check (f->pool, &((NbdfsOpen *) o)->wb_sample))
        untold++;
    g_mutex_unlock (&fs->lock);
    int err = nbdc_pool_close_until (f->pool, deadline);
    if (err)
      g_warning ("file '%s': the final flush failed: %s", f->name,
                 g_strerror (err));
    else if (untold) {
      g_warning ("file '%s': the final flush failed: acknowledged writes "
                 "were lost and %u open file(s) were not told", f->name,
                 untold);
      err = EIO;
    }
    if (err && first == 0)
      first = err;
    file_free (f);
  }
  g_ptr_array_free (fs->files, TRUE);
  fs->files = NULL;
  return first;
}
