"""mmengine's CheckpointHook, safe to kill at any moment."""
import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from ...checkpoint import atomic_write


class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook, safe to kill at any moment.

    mmengine's hook deletes the oldest kept checkpoint *before* writing the new one and writes
    ``last_checkpoint`` with a plain ``open('w')``. With ``max_keep_ckpts=1`` a run killed while
    saving ``iter_4.pth`` has already deleted ``iter_2.pth``, and ``last_checkpoint`` still names
    it: ``--resume`` fails. This hook writes the new checkpoint (atomically, through mmmv's
    AtomicLocalBackend), then ``last_checkpoint`` (atomically), and only then deletes the
    outdated checkpoint. Before training it removes the temporary files that a save interrupted
    by a kill leaves behind (``.iter_4.pth.*.tmp``). Same arguments as ``CheckpointHook``.

    Both orders live in mmengine's private ``_save_checkpoint_with_step``, which has no public
    replacement; this class overrides it (listed in :mod:`mmmv.engine.mmengine_internals`).
    """

    def before_train(self, runner):
        super().before_train(runner)
        if not is_main_process() or not osp.isdir(self.out_dir):
            return
        for path in glob.glob(osp.join(self.out_dir, '.*.tmp')):
            os.unlink(path)
            print_log(f'removed {path}, left by a checkpoint save that was interrupted',
                      logger='current')

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), str(self.last_ckpt).encode())
        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)
