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

/* A root-writable parameter with its default and description. */
#define BLKSNAP_PARAM(type, name, def, desc)		\
	static type name = def;				\
	module_param(name, type, 0644);			\
	MODULE_PARM_DESC(name, desc " (" #def ")")

BLKSNAP_PARAM(uint, tracking_block_minimum_shift, 16, "log2 of the smallest tracking block, bytes");
BLKSNAP_PARAM(uint, tracking_block_maximum_shift, 26, "log2 of the largest tracking block, bytes");
BLKSNAP_PARAM(uint, tracking_block_maximum_count, 2097152, "tracking blocks per device before blocks grow");
BLKSNAP_PARAM(uint, chunk_minimum_shift, 18, "log2 of the smallest copy-on-write chunk, bytes");
BLKSNAP_PARAM(uint, chunk_maximum_shift, 26, "log2 of the largest copy-on-write chunk, bytes");
BLKSNAP_PARAM(uint, chunk_maximum_count, 2097152, "chunks per device before chunks grow");
BLKSNAP_PARAM(uint, chunk_maximum_in_cache, 32, "chunk buffers kept in memory after use");
BLKSNAP_PARAM(uint, free_diff_buffer_pool_size, 128, "spare chunk buffers kept for reuse");
BLKSNAP_PARAM(ulong, diff_storage_minimum, 2097152, "sectors of storage a snapshot asks for at once");
BLKSNAP_PARAM(uint, diff_storage_wait_ms, 5000, "ms a write waits for storage before the image is corrupted");

/* Indexed as `Param` in src/kernel_ext/params.rs. */
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
