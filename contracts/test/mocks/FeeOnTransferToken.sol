// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {DevToken} from "../../src/DevToken.sol";

/// @notice A token that, once its fee is switched on (as some tokens can), burns `FEE_BPS` of every transfer
/// (mints are exempt): the receiver gets less than was sent.
contract FeeOnTransferToken is DevToken {
    uint256 public constant FEE_BPS = 100;
    bool public feeOn;

    function setFeeOn(bool value) external {
        feeOn = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (!feeOn || from == address(0) || to == address(0)) return super._update(from, to, value);
        uint256 fee = value * FEE_BPS / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
