//! (SKELETON: owned by the aliyun module's owner.)
