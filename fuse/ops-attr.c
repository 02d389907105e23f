/* nbdfs — the namespace and metadata ops: lookup, getattr, setattr,
 * readdir, open, release, statfs. None of them talks to the server: the
 * tree is one directory holding one regular file per export, whose size
 * is the export size and never changes. Modes, owners and times live in
 * memory only (chmod/chown/touch work for the life of the mount).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/statvfs.h>

#include "fuse/fs.h"

void
nbdfs_fill_attr (NbdfsFs *fs, fuse_ino_t ino, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  g_mutex_lock (&fs->lock);
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = fs->root_mode;
    st->st_nlink = 2;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_atim = st->st_mtim = st->st_ctim = fs->root_time;
    st->st_blksize = 4096;
  }
  else {
    NbdfsFile *f = nbdfs_file_by_ino (fs, ino);
    g_assert (f != NULL);
    st->st_mode = f->mode;
    st->st_nlink = 1;
    st->st_uid = f->uid;
    st->st_gid = f->gid;
    st->st_size = f->exp.size;
    st->st_blksize = MAX (f->exp.pref_block, 512);
    /* st_blocks counts 512-byte units: from base:allocation when a scan
     * has run, else the whole size (the honest default: we don't know). */
    gint64 allocated = __atomic_load_n (&f->allocated, __ATOMIC_RELAXED);
    st->st_blocks = ((allocated >= 0 ? (uint64_t) allocated : f->exp.size)
                     + 511) / 512;
    st->st_atim = f->atime;
    st->st_mtim = f->mtime;
    st->st_ctim = f->ctime;
  }
  g_mutex_unlock (&fs->lock);
}

static gboolean
ino_exists (NbdfsFs *fs, fuse_ino_t ino)
{
  return ino == FUSE_ROOT_ID || nbdfs_file_by_ino (fs, ino) != NULL;
}

void
nbdfs_fuse_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  NbdfsFs *fs = nbdfs_fs (req);
  struct fuse_entry_param e = { 0 };

  if (parent != FUSE_ROOT_ID) {
    fuse_reply_err (req, ENOTDIR);
    return;
  }
  NbdfsFile *f = nbdfs_file_by_name (fs, name);
  if (f == NULL) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  e.ino = f->ino;
  e.generation = 1;
  e.attr_timeout = NBDFS_ATTR_TIMEOUT;
  e.entry_timeout = NBDFS_ATTR_TIMEOUT;
  nbdfs_fill_attr (fs, f->ino, &e.attr);
  nbdfs_allocation_refresh (fs, f);
  fuse_reply_entry (req, &e);
}

void
nbdfs_fuse_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  struct stat st;

  if (!ino_exists (fs, ino)) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  nbdfs_fill_attr (fs, ino, &st);
  if (ino != FUSE_ROOT_ID)
    nbdfs_allocation_refresh (fs, nbdfs_file_by_ino (fs, ino));
  fuse_reply_attr (req, &st, NBDFS_ATTR_TIMEOUT);
}

static void
set_time (struct timespec *dst, const struct timespec *src, gboolean now)
{
  if (now)
    clock_gettime (CLOCK_REALTIME, dst);
  else
    *dst = *src;
}

void
nbdfs_fuse_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                    int to_set, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_by_ino (fs, ino);
  struct stat st;

  if (!ino_exists (fs, ino)) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    /* The file is the export: its size is the server's and fixed. Setting
     * the same size (cp, qemu-img do) is fine; anything else is refused
     * rather than pretending. */
    if (f == NULL) {
      fuse_reply_err (req, EISDIR);
      return;
    }
    if ((uint64_t) attr->st_size != f->exp.size) {
      g_warning ("%s: refused to change the size to %jd bytes: the file is "
                 "the NBD export and its size is fixed at %" G_GUINT64_FORMAT
                 " bytes", f->name, (intmax_t) attr->st_size, f->exp.size);
      fuse_reply_err (req, EPERM);
      return;
    }
  }

  struct timespec now;
  clock_gettime (CLOCK_REALTIME, &now);
  g_mutex_lock (&fs->lock);
  mode_t *mode = f ? &f->mode : &fs->root_mode;
  if (to_set & FUSE_SET_ATTR_MODE)
    *mode = (*mode & S_IFMT) | (attr->st_mode & 07777);
  if (f) {
    if (to_set & FUSE_SET_ATTR_UID)
      f->uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
      f->gid = attr->st_gid;
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
      set_time (&f->atime, &attr->st_atim,
                (to_set & FUSE_SET_ATTR_ATIME_NOW) != 0);
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
      set_time (&f->mtime, &attr->st_mtim,
                (to_set & FUSE_SET_ATTR_MTIME_NOW) != 0);
    f->ctime = now;
  }
  else if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
    set_time (&fs->root_time, &attr->st_mtim,
              (to_set & FUSE_SET_ATTR_MTIME_NOW) != 0);
  g_mutex_unlock (&fs->lock);

  nbdfs_fill_attr (fs, ino, &st);
  fuse_reply_attr (req, &st, NBDFS_ATTR_TIMEOUT);
}

void
nbdfs_fuse_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);

  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err (req, ENOTDIR);
    return;
  }
  /* Entry i (0 ".", 1 "..", 2.. the files) has offset i + 1: the offset a
   * following readdir resumes at. */
  guint n = fs->files->len + 2;
  g_autofree char *buf = g_malloc (size);
  size_t used = 0;
  for (guint i = off < 0 ? 0 : (guint) MIN ((guint64) off, n); i < n; i++) {
    struct stat st = { 0 };
    const char *name;
    if (i < 2) {
      st.st_ino = FUSE_ROOT_ID;
      st.st_mode = S_IFDIR;
      name = i == 0 ? "." : "..";
    }
    else {
      NbdfsFile *f = g_ptr_array_index (fs->files, i - 2);
      st.st_ino = f->ino;
      st.st_mode = S_IFREG;
      name = f->name;
    }
    size_t need = fuse_add_direntry (req, buf + used, size - used, name, &st,
                                     i + 1);
    if (need > size - used)
      break;
    used += need;
  }
  fuse_reply_buf (req, buf, used);
}

void
nbdfs_fuse_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);

  if (f == NULL)
    return;
  int acc = fi->flags & O_ACCMODE;
  if (acc != O_RDONLY && f->read_only) {
    fuse_reply_err (req, EROFS);
    return;
  }
  /* O_TRUNC is ignored, as for a block device: the export cannot shrink
   * (FUSE_CAP_ATOMIC_O_TRUNC hands it to us instead of a setattr). */
  if ((fi->flags & O_TRUNC) && fs->debug)
    g_debug ("%s: open with O_TRUNC: ignored (fixed-size export)", f->name);
  /* Nothing changes the export behind the kernel's back except other
   * clients of the server, which a block device would not see either. */
  fi->keep_cache = 1;
  /* A close of a read-only open has nothing to flush. */
  fi->noflush = acc == O_RDONLY;
  NbdfsOpen *o = g_new (NbdfsOpen, 1);
  o->flags = fi->flags;
  o->wb_sample = nbdc_pool_wb_err_sample (f->pool);
  fi->fh = (uint64_t) (uintptr_t) o;
  g_mutex_lock (&fs->lock);
  g_hash_table_add (f->opens, o);
  g_mutex_unlock (&fs->lock);
  if (fuse_reply_open (req, fi) != 0) {
    /* Interrupted: no release will come (the table frees it). */
    g_mutex_lock (&fs->lock);
    g_hash_table_remove (f->opens, o);
    g_mutex_unlock (&fs->lock);
  }
}

void
nbdfs_fuse_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsOpen *o = (NbdfsOpen *) (uintptr_t) fi->fh;
  g_mutex_lock (&fs->lock);
  NbdfsFile *f = fs->files ? nbdfs_file_by_ino (fs, ino) : NULL;
  /* The table frees it. */
  gboolean owned = f && g_hash_table_remove (f->opens, o);
  g_mutex_unlock (&fs->lock);
  if (!owned)
    g_free (o);
  fuse_reply_err (req, 0);
}

void
nbdfs_fuse_statfs (fuse_req_t req, fuse_ino_t ino)
{
  NbdfsFs *fs = nbdfs_fs (req);
  struct statvfs sv = { 0 };
  uint64_t total = 0;
  unsigned long bsize = 4096;

  for (guint i = 0; i < fs->files->len; i++) {
    NbdfsFile *f = g_ptr_array_index (fs->files, i);
    total += f->exp.size;
    bsize = MAX (bsize, f->exp.pref_block);
  }
  /* The files fill the file system exactly: nothing is free and no file
   * can be created. */
  sv.f_bsize = bsize;
  sv.f_frsize = bsize;
  sv.f_blocks = (total + bsize - 1) / bsize;
  sv.f_bfree = 0;
  sv.f_bavail = 0;
  sv.f_files = fs->files->len + 1;
  sv.f_ffree = 0;
  sv.f_favail = 0;
  sv.f_namemax = 255;
  fuse_reply_statfs (req, &sv);
}
