// SPDX-License-Identifier: GPL-2.0
/*
 * blksnap's module parameters.
 *
 * 6.12's Rust module! macro cannot declare parameters, so they live in this
 * small C object, linked into the module, and the Rust side reads them
 * through blksnap_param() each time it needs one (at CREATE, TAKE and
 * allocation time), so that a change through sysfs takes effect for the
 * next snapshot.
 */
#include <linux/compiler.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static uint tracking_block_minimum_shift = 16;
module_param(tracking_block_minimum_shift, uint, 0644);
MODULE_PARM_DESC(tracking_block_minimum_shift, "log2 of the smallest tracking block, bytes (16)");

static uint tracking_block_maximum_shift = 26;
module_param(tracking_block_maximum_shift, uint, 0644);
MODULE_PARM_DESC(tracking_block_maximum_shift, "log2 of the largest tracking block, bytes (26)");

static uint tracking_block_maximum_count = 2097152;
module_param(tracking_block_maximum_count, uint, 0644);
MODULE_PARM_DESC(tracking_block_maximum_count, "tracking blocks per device before blocks grow (2097152)");

static uint chunk_minimum_shift = 18;
module_param(chunk_minimum_shift, uint, 0644);
MODULE_PARM_DESC(chunk_minimum_shift, "log2 of the smallest copy-on-write chunk, bytes (18)");

static uint chunk_maximum_shift = 26;
module_param(chunk_maximum_shift, uint, 0644);
MODULE_PARM_DESC(chunk_maximum_shift, "log2 of the largest copy-on-write chunk, bytes (26)");

static uint chunk_maximum_count = 2097152;
module_param(chunk_maximum_count, uint, 0644);
MODULE_PARM_DESC(chunk_maximum_count, "chunks per device before chunks grow (2097152)");

static uint chunk_maximum_in_cache = 32;
module_param(chunk_maximum_in_cache, uint, 0644);
MODULE_PARM_DESC(chunk_maximum_in_cache, "chunk buffers kept in memory after use (32)");

static uint free_diff_buffer_pool_size = 128;
module_param(free_diff_buffer_pool_size, uint, 0644);
MODULE_PARM_DESC(free_diff_buffer_pool_size, "spare chunk buffers kept for reuse (128)");

static ulong diff_storage_minimum = 2097152;
module_param(diff_storage_minimum, ulong, 0644);
MODULE_PARM_DESC(diff_storage_minimum, "sectors of storage a snapshot asks for at once (2097152)");

static uint diff_storage_wait_ms = 5000;
module_param(diff_storage_wait_ms, uint, 0644);
MODULE_PARM_DESC(diff_storage_wait_ms, "ms a write waits for storage before the image is corrupted (5000)");

/* Keep in step with `Param` in src/kernel_ext/params.rs. */
u64 blksnap_param(unsigned int id);
u64 blksnap_param(unsigned int id)
{
	switch (id) {
	case 0: return READ_ONCE(tracking_block_minimum_shift);
	case 1: return READ_ONCE(tracking_block_maximum_shift);
	case 2: return READ_ONCE(tracking_block_maximum_count);
	case 3: return READ_ONCE(chunk_minimum_shift);
	case 4: return READ_ONCE(chunk_maximum_shift);
	case 5: return READ_ONCE(chunk_maximum_count);
	case 6: return READ_ONCE(chunk_maximum_in_cache);
	case 7: return READ_ONCE(free_diff_buffer_pool_size);
	case 8: return READ_ONCE(diff_storage_minimum);
	case 9: return READ_ONCE(diff_storage_wait_ms);
	}
	return 0;
}
