// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title TokenTransfers
/// @notice The two token movements of the escrow and the staking contract that plain SafeERC20 does not give:
/// a pull that reports what actually arrived, and a push that a recipient cannot make revert.
library TokenTransfers {
    using SafeERC20 for IERC20;

    /// @dev Gas a pushed transfer may use. A plain or blocklist-checking ERC-20 transfer needs well under half of
    /// it; a recipient hook that wants more (or burns it all) makes the push fail, and the caller credits the
    /// amount instead, so a recipient can cost the caller at most this much. A transaction given too little gas
    /// cannot turn a push into a credit: when the push gets less than this cap (63/64 of what is left), the 1/64
    /// kept by the caller (under 2,400 gas) cannot pay for the credit's storage write, and the whole call fails.
    uint256 internal constant PUSH_GAS = 150_000;

    /// @dev Pulls `amount` from `from` (approve first) and returns the increase of this contract's balance, which
    /// differs from `amount` for fee-on-transfer and similar tokens.
    function pull(IERC20 token, address from, uint256 amount) internal returns (uint256 received) {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(from, address(this), amount);
        received = token.balanceOf(address(this)) - before;
    }

    /// @dev Transfers `amount` to `to` with at most `PUSH_GAS` gas; returns false instead of reverting when the
    /// transfer reverts, returns false, or runs out of gas. Only 32 bytes of return data are copied.
    function tryPush(IERC20 token, address to, uint256 amount) internal returns (bool ok) {
        bytes4 selector = IERC20.transfer.selector;
        uint256 gasLimit = PUSH_GAS;
        assembly ("memory-safe") {
            let fmp := mload(0x40)
            mstore(0x00, selector)
            mstore(0x04, and(to, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(0x24, amount)
            ok := call(gasLimit, token, 0, 0x00, 0x44, 0x00, 0x20)
            // Success: the call returned `true`, or returned nothing from a contract (tokens without a return value).
            let returnedTrue := and(gt(returndatasize(), 31), eq(mload(0x00), 1))
            let returnedNothing := and(iszero(returndatasize()), gt(extcodesize(token), 0))
            ok := and(ok, or(returnedTrue, returnedNothing))
            mstore(0x40, fmp)
        }
    }
}
